"""The run options: train.precision, train.compile, log.tensorboard (and their refusals)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from gradpen.cli import main
from gradpen.errors import UserError
from gradpen.train import Trainer, load, open_run, train
from gradpen.train import loop as loop_module
from gradpen.train.checkpoint import load_checkpoint, save_atomic

TOY = [
    "data.name='8gaussians'",
    "generator.width=16",
    "critic.width=16",
    "train.n_critic=2",
    "train.batch_size=32",
    "train.g_lr=1e-3",
    "train.d_lr=1e-3",
    "penalty.weight=0.1",
    "log.every=2",
    "log.checkpoint_every=2",
    "log.eval_samples=200",
    "log.progress=false",
]
IMAGES = [
    "data.name='mnist5k'",
    "generator.kind='dcgan28'",
    "critic.kind='dcgan28'",
    "generator.width=4",
    "critic.width=4",
    "train.n_critic=1",
    "train.batch_size=8",
    "train.steps=2",
    "log.every=1",
    "log.checkpoint_every=2",
    "log.eval_samples=100",
    "log.progress=false",
]


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


def assert_finite_losses(run_dir) -> None:
    for record in records(run_dir):
        for key in ("d_loss", "g_loss", "penalty", "wasserstein"):
            assert torch.isfinite(torch.tensor(record[key])), (key, record)


# --- precision ------------------------------------------------------------------------------


class AutocastDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the dtypes of the matrix products and convolutions that run."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.addmm.default, torch.ops.aten.convolution.default):
            self.dtypes.add(args[1].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
@pytest.mark.parametrize("penalty", ["wgan-gp", "r1"])
def test_each_precision_runs_the_forwards_in_its_dtype_with_finite_losses(
    tmp_path, precision, dtype, penalty
):
    config = load(None, [*TOY, f"train.precision={precision!r}", f"penalty.name={penalty!r}"])
    trainer = Trainer(config, tmp_path / "run")
    with AutocastDtypes() as seen:
        rounds = [trainer.train_round() for _ in range(2)]
    assert seen.dtypes == {dtype}
    for stats in rounds:
        for key in ("d_loss", "g_loss", "penalty", "wasserstein"):
            assert stats[key].dtype == torch.float32 and torch.isfinite(stats[key]), key
    assert rounds[-1]["penalty"] > 0
    fp16 = precision == "fp16"
    assert trainer.scaler_D.is_enabled() == fp16 and ("skipped" in rounds[0]) == fp16
    assert (trainer.penalty.scaler is trainer.scaler_D) == fp16
    # the diagnostics stay in float32
    with AutocastDtypes() as seen:
        trainer.gradient_norms()
    assert seen.dtypes == {torch.float32}


def test_fp16_with_a_lazy_penalty_takes_its_separate_scaled_step(tmp_path):
    overrides = [*TOY, "train.precision='fp16'", "penalty.name='r1'", "penalty.every=2"]
    trainer = Trainer(load(None, overrides), tmp_path / "run")
    stats = trainer.train_round()  # critic steps 0 (loss + lazy penalty phase) and 1 (loss)
    assert torch.isfinite(stats["penalty"]) and stats["penalty"] > 0
    assert trainer.scaler_D.state_dict()["_growth_tracker"] == 3  # three scaled critic steps


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_tiny_image_run_in_16_bits_with_augmentation(tmp_path, precision):
    overrides = [*IMAGES, f"train.precision={precision!r}", "train.augment='translation,cutout'"]
    _, summary = train(None, overrides, out=tmp_path / "run")
    assert summary["step"] == 2
    assert_finite_losses(tmp_path / "run")


def fp16_trainer(tmp_path, init_scale: float) -> Trainer:
    """A toy fp16 trainer whose critic scaler starts at ``init_scale``."""
    trainer = Trainer(load(None, [*TOY, "train.steps=1", "train.precision='fp16'"]), tmp_path)
    trainer.scaler_D = torch.amp.GradScaler("cpu", init_scale=init_scale)
    trainer.penalty.scaler = trainer.scaler_D
    return trainer


def test_fp16_scales_the_penalty_and_an_overflow_skips_the_step(tmp_path):
    trainer = fp16_trainer(tmp_path, 2.0**40)  # the penalty's scaled gradient overflows float16
    before = [p.detach().clone() for p in trainer.D.parameters()]
    stats = trainer.critic_step()
    assert not torch.isfinite(stats["penalty"])  # an overflow, not a divergence: no raise
    assert torch.isfinite(stats["d_loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.D.parameters(), strict=True))
    assert trainer.scaler_D.get_scale() == 2.0**39


def test_fp16_stops_when_the_loss_scale_falls_below_one(tmp_path):
    trainer = fp16_trainer(tmp_path, 0.5)
    with pytest.raises(loop_module.TrainingDiverged, match=r"GradScaler's scale fell to 0\.5"):
        trainer.critic_step()


def test_fp16_resume_restores_the_scalers_and_equals_an_uninterrupted_run(tmp_path):
    fp16 = [*TOY, "train.precision='fp16'"]
    straight, _ = train(None, [*fp16, "train.steps=4"], out=tmp_path / "a")
    train(None, [*fp16, "train.steps=2"], out=tmp_path / "b")
    checkpoint = tmp_path / "b" / "checkpoints" / "last.pt"
    state = load_checkpoint(checkpoint)
    fresh = torch.amp.GradScaler("cpu").state_dict()
    assert state["scalers"]["critic"]["_growth_tracker"] == 4  # 2 steps x 2 critic steps
    assert state["scalers"]["critic"] != fresh
    resumed, _ = train(resume=tmp_path / "b", overrides=["train.steps=4"])
    for name, tensor in straight.D.state_dict().items():
        assert torch.equal(tensor, resumed.D.state_dict()[name]), name
    assert resumed.scaler_D.state_dict() == straight.scaler_D.state_dict()
    # The scale itself comes from the checkpoint: a changed one is what the resumed run has.
    state["scalers"]["critic"]["scale"] = 1024.0
    state["scalers"]["generator"]["scale"] = 512.0
    save_atomic(state, checkpoint)
    reopened = open_run(tmp_path / "b")
    assert (reopened.scaler_D.get_scale(), reopened.scaler_G.get_scale()) == (1024.0, 512.0)


def test_a_precision_the_device_cannot_autocast_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    config = load(None, [*TOY, "train.precision='bf16'"])
    with pytest.raises(UserError, match=r"train.precision = 'bf16' needs autocast in .*'cpu'"):
        Trainer(config, tmp_path / "run")
    with pytest.raises(UserError, match="choose one of: fp32, bf16, fp16"):
        load(None, [*TOY, "train.precision='fp8'"])


def test_channels_last_converts_the_conv_networks_and_trains_like_the_default(tmp_path):
    rounds, trainers = {}, {}
    for layout in ("false", "true"):
        overrides = [*IMAGES, f"train.channels_last={layout}", "penalty.name='r1'"]
        trainers[layout] = Trainer(load(None, overrides), tmp_path / layout)
        torch.manual_seed(4)
        rounds[layout] = trainers[layout].train_round()
    for layout, trainer in trainers.items():
        for net in (trainer.G, trainer.D):
            weights = [p for p in net.parameters() if p.dim() == 4]
            nhwc = [w.is_contiguous(memory_format=torch.channels_last) for w in weights]
            assert weights and (all(nhwc) if layout == "true" else not all(nhwc))
    for key in ("d_loss", "penalty", "wasserstein", "g_loss"):
        torch.testing.assert_close(rounds["true"][key], rounds["false"][key])
    for a, b in zip(trainers["false"].D.parameters(), trainers["true"].D.parameters(), strict=True):
        torch.testing.assert_close(a, b)


# --- compile --------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_critic_step_in_the_loop_matches_the_eager_loop(tmp_path, monkeypatch, precision):
    """One round each way from the same state: equal critic parameters (to float rounding).

    The aot_eager backend is aot_autograd (where double backward fails) without inductor's code
    generation, which takes minutes on a busy CPU (tests/test_compile.py runs inductor, slow).
    """
    monkeypatch.setattr(loop_module, "COMPILE_BACKEND", "aot_eager")
    overrides = [*TOY, "train.steps=1", "penalty.name='r1'", "train.loss='ns'"]
    overrides.append(f"train.precision={precision!r}")
    eager = Trainer(load(None, overrides), tmp_path / "eager")
    compiled = Trainer(load(None, [*overrides, "train.compile=true"]), tmp_path / "compiled")
    assert compiled.compiled_step is not None
    stats = {}
    for name, trainer in [("eager", eager), ("compiled", compiled)]:
        torch.manual_seed(5)
        stats[name] = trainer.train_round()
    for key in ("d_loss", "penalty", "wasserstein", "g_loss"):
        torch.testing.assert_close(stats["compiled"][key], stats["eager"][key])
    for (name, a), b in zip(
        eager.D.state_dict().items(), compiled.D.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert stats["compiled"]["penalty"] > 0


@pytest.mark.parametrize(
    "extra, named",
    [
        ("train.precision='fp16'", "train.precision = 'fp16'"),
        ("penalty.every=4", "penalty.every = 4"),
        ("train.spectral_norm=true", "train.spectral_norm"),
        ("penalty.name='approx-r1'", "supports the penalties"),
    ],
)
def test_compile_refuses_what_it_does_not_support(tmp_path, extra, named):
    with pytest.raises(UserError, match=named):
        Trainer(load(None, [*TOY, "train.compile=true", extra]), tmp_path / "run")


def test_compile_refuses_augmentation(tmp_path):
    overrides = [*IMAGES, "train.compile=true", "train.augment='color'"]
    with pytest.raises(UserError, match=r"train\.augment"):
        Trainer(load(None, overrides), tmp_path / "run")


# --- TensorBoard ----------------------------------------------------------------------------


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    run_dir = tmp_path / "run"
    train(None, [*TOY, "train.steps=4", "log.tensorboard=true"], out=run_dir)
    (event_file,) = run_dir.glob("events.out.tfevents.*")
    events = event_accumulator.EventAccumulator(str(event_file))
    events.Reload()
    logged = records(run_dir)
    for key in ("d_loss", "g_loss", "penalty", "wasserstein", "gnorm_interp_mean"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["step"] for r in logged]
        for scalar, record in zip(scalars, logged, strict=True):
            assert scalar.value == pytest.approx(record[key], rel=1e-6)


def test_tensorboard_not_installed_is_exit_2_with_the_pip_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises
    out = tmp_path / "run"
    status = main(
        ["train", "--out", str(out), "--set", "log.tensorboard=true", "--set", "train.steps=1"]
    )
    assert status == 2
    assert "pip install 'gradpen[tensorboard]'" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists()
