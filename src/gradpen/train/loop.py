"""The training loop: WGAN-GP's Algorithm 1, generalized to other losses and penalties.

For each generator step, ``n_critic`` critic steps, each on a fresh real batch and fresh fakes;
the critic minimizes its adversarial loss plus the penalty term; the generator then takes
``n_generator`` steps. Everything random draws from torch's global RNG (seeded once), whose
state is checkpointed, so a resumed run reproduces an uninterrupted one exactly. Diagnostics
draw from their own generator and never perturb training.

Under ``torchrun`` (see :mod:`gradpen.train.distributed`) each rank runs this loop on its own
batches with DDP-wrapped networks; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import json
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from gradpen import losses
from gradpen.allocator import keep_freed_memory
from gradpen.augment import AugmentedCritic
from gradpen.compiled import CompiledCriticStep
from gradpen.data.mnist import ImageDataset
from gradpen.errors import UserError
from gradpen.gradients import check_no_batchnorm, penalty_forward
from gradpen.lipschitz import clip_weights_, spectral_norm
from gradpen.metrics.gradnorm import gradient_norm_stats
from gradpen.nets import CRITICS, GENERATORS, accepts, build_critic, build_generator
from gradpen.outputs import critic_output, scores
from gradpen.penalties import interpolate
from gradpen.penalty import Penalty
from gradpen.penalty import lazy_adam_hyperparameters as lazy_adam
from gradpen.train import distributed
from gradpen.train.checkpoint import (
    CHECKPOINT_NAME,
    check_writable,
    remove_stale_temporaries,
    save_atomic,
    write_text_atomic,
)
from gradpen.train.config import TOY_DATA, Config, threads_for, to_toml
from gradpen.train.data import BatchSource, make_source
from gradpen.train.distributed import DistEnv
from gradpen.train.evaluate import (
    evaluate,
    plot_curves_of,
    sample_images01,
    save_sample_picture,
)

DIAGNOSTIC_SEED_OFFSET = 7919
FUSED_ADAM_DEVICES = ("cpu", "cuda")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Below this the float16 scaler divides the gradients: even unscaled they overflow float16.
MIN_LOSS_SCALE = 1.0
FP16_CRITIC_INIT_SCALE = 2.0**15
COMPILE_BACKEND = "inductor"  # torch.compile's backend for train.compile (tests use aot_eager)


class TrainingDiverged(UserError):
    """A loss, the penalty or a gradient became NaN or infinite."""


def generate(
    generator: nn.Module,
    n: int,
    y: Tensor | None,
    device: torch.device,
    forward: nn.Module | None = None,
) -> Tensor:
    """``n`` generator samples (for labels ``y`` when conditional), noise from the global RNG.

    ``forward``: the module that runs the generator (its DDP wrapper), if not ``generator``.
    """
    z = generator.sample_noise(n, device=device)
    net = forward if forward is not None else generator
    return net(z) if y is None else net(z, y)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters do not require grad inside the block (no gradient is made)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in zip(module.parameters(), flags, strict=True):
            param.requires_grad_(flag)


def _resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"train.device {name!r} is not a device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available here; use 'cpu'")
    return device


def _build_penalty(config: Config, critic: nn.Module, scaler: Any = None) -> Penalty:
    """The configured penalty, checked against the critic before any training (exit 2)."""
    p = config.penalty
    try:
        penalty = Penalty(
            p.name,
            p.weight,
            p.every,
            allow_batchnorm=p.allow_batchnorm,
            scaler=scaler,
            reduce=p.reduce,
            **p.options,
        )
        if penalty.active(0) and not p.allow_batchnorm:
            check_no_batchnorm(critic)
    except ValueError as error:
        raise UserError(
            f"[penalty] {error}. (Config keys: penalty.name, penalty.options.*, and "
            "penalty.allow_batchnorm = true to allow a batch-normalized critic.)"
        ) from None
    return penalty


def _adam(
    net: nn.Module, lr: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.Adam:
    """Adam, with PyTorch's fused kernel on CPU and CUDA (one kernel for all parameters).

    For the small toy networks the per-tensor Adam costs about as much as a forward pass; the
    fused one is ~2x faster per step and equal up to float rounding.
    """
    fused = device.type in FUSED_ADAM_DEVICES
    return torch.optim.Adam(net.parameters(), lr=lr, betas=betas, fused=fused)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` (None for fp32), checked on ``device``."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return None
    supported = torch.amp.is_autocast_available(device.type)
    if supported:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns, then runs without autocast
            with torch.autocast(device.type, dtype=dtype):
                supported = torch.get_autocast_dtype(device.type) == dtype and (
                    torch.is_autocast_enabled(device.type)
                )
    if not supported:
        raise UserError(
            f"train.precision = {precision!r} needs autocast in {dtype} on {device.type!r}, "
            "which this PyTorch build does not support; use train.precision = 'fp32' or "
            "another device"
        )
    return dtype


def _check_compilable(config: Config, dist: DistEnv) -> None:
    """Refuse (exit 2) a configuration that ``train.compile`` does not support."""
    t, p = config.train, config.penalty
    unsupported = {
        "train.precision = 'fp16' (CompiledCriticStep takes no GradScaler)": (
            t.precision == "fp16"
        ),
        "train.augment (random augmentation inside the compiled step)": bool(t.augment),
        "train.spectral_norm (its power iteration writes buffers in the forward)": (
            t.spectral_norm
        ),
        f"penalty.every = {p.every} (the lazy penalty's separate optimizer step)": p.every > 1,
        "torchrun (the compiled step's gradients bypass DDP's all-reduce)": dist.enabled,
    }
    refused = [what for what, applies in unsupported.items() if applies]
    if refused:
        raise UserError(
            f"train.compile = true does not support {'; '.join(refused)}. Set "
            "train.compile = false, or change those keys"
        )


class Trainer:
    """One run: networks, optimizers, data, and the run directory it writes."""

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.dist: DistEnv
        threads = threads_for(config)
        if threads is not None:
            # Small networks gain nothing from intra-op threads, and on a busy machine the
            # threads' spin-waits can make each step many times slower.
            torch.set_num_threads(threads)
        keep_freed_memory()  # no page faults on every penalized step (glibc; else a no-op)
        self.dist, self.device = distributed.join(_resolve_device(config.train.device))
        torch.manual_seed(config.seed)
        self.data: BatchSource = make_source(config, self.device)
        self.is_toy = config.data.name in TOY_DATA
        gen_options = dict(config.generator.options)
        critic_options = dict(config.critic.options)
        if config.data.conditional:
            gen_options.setdefault("n_classes", self.data.num_classes)
            critic_options.setdefault("n_classes", self.data.num_classes)
        if self.data.image_shape is not None:
            channels = self.data.image_shape[0]
            if accepts(CRITICS, config.critic.kind, "in_channels"):
                critic_options.setdefault("in_channels", channels)
            if accepts(GENERATORS, config.generator.kind, "out_channels"):
                gen_options.setdefault("out_channels", channels)
        self.generator_options = gen_options  # with what the data decided: export records it
        self.G = build_generator(config.generator.kind, **gen_options).to(self.device)
        self.D = build_critic(config.critic.kind, **critic_options).to(self.device)
        if config.train.channels_last:
            # 4-D weights in NHWC order: each convolution then runs (and returns) channels-last
            # whatever its input's layout; MLPs are unchanged.
            for net in (self.G, self.D):
                net.to(memory_format=torch.channels_last)
        if config.train.spectral_norm:
            spectral_norm(self.D)
        self.data.check_networks(self.G, self.D)
        # Training forwards go through these (DDP wrappers under torchrun, else G and D).
        self.G_train = distributed.wrap(self.G, self.dist, self.device)
        self.D_train = distributed.wrap(self.D, self.dist, self.device)
        if self.dist.enabled:
            torch.manual_seed(distributed.rank_seed(config.seed, self.dist.rank))
            self._shard_images()
        t = config.train
        self.autocast_dtype = _autocast_dtype(t.precision, self.device)
        # float16 scales each backward (the penalty's input gradient too) so that small
        # gradients do not underflow; disabled, a scaler passes everything through unchanged.
        fp16 = t.precision == "fp16"
        # The critic's scale starts at 2^15: at torch's default 2^16 the penalty's scaled
        # gradient seed itself overflows float16 (max 65504), so its first step always skipped.
        self.scaler_D = torch.amp.GradScaler(
            self.device.type, init_scale=FP16_CRITIC_INIT_SCALE, enabled=fp16
        )
        self.scaler_G = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.penalty = _build_penalty(config, self.D, self.scaler_D if fp16 else None)
        # What the losses and the penalty see: the critic after the augmentation, if any.
        self.D_seen = self._augmented(self.D_train)
        self.D_seen_by_G = self._augmented(self.D)
        self.compiled_step = self._compile() if t.compile else None
        if config.log.tensorboard:
            _summary_writer_class()  # fail now, before any work, when it is not installed
        # The correction pays for the lazy penalty's extra optimizer steps (one per k).
        lazy_every = self.penalty.every if self.penalty.active(0) else 1
        d_lr, d_betas = lazy_adam(t.d_lr, (t.d_betas[0], t.d_betas[1]), lazy_every)
        self.opt_G = _adam(self.G, t.g_lr, (t.g_betas[0], t.g_betas[1]), self.device)
        self.opt_D = _adam(self.D, d_lr, d_betas, self.device)
        decay = (lambda s: max(0.0, 1.0 - s / t.steps)) if t.lr_decay == "linear" else None
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, decay or (lambda s: 1.0))
            for opt in (self.opt_G, self.opt_D)
        ]
        self.ema = (
            AveragedModel(self.G, multi_avg_fn=get_ema_multi_avg_fn(t.ema)) if t.ema > 0 else None
        )
        self.step = 0  # completed generator steps
        self.d_step = 0  # completed critic steps (the lazy penalty's clock)
        self.diagnostic_rng = torch.Generator(device="cpu").manual_seed(
            config.seed + DIAGNOSTIC_SEED_OFFSET
        )
        self._interrupted = False
        self._last: dict[str, Tensor] = {}

    def _augmented(self, critic: nn.Module) -> nn.Module:
        """``critic`` behind ``train.augment``'s augmentation, or ``critic`` when it is off."""
        policy = self.config.train.augment
        return AugmentedCritic(critic, policy) if policy else critic

    def _compile(self) -> CompiledCriticStep:
        """The compiled critic step, and compiled forwards for the generator step.

        The critic step is :class:`~gradpen.compiled.CompiledCriticStep` (loss and penalty in
        one compiled ``torch.func`` gradient: aot_autograd has no double backward); the generator
        step needs one backward only, so its generator and critic forwards are plain
        ``torch.compile``-d modules (same parameters).
        """
        _check_compilable(self.config, self.dist)
        step = CompiledCriticStep(
            self.D, self.penalty, loss=self.config.train.loss, backend=COMPILE_BACKEND
        )
        self.G_train = torch.compile(self.G, backend=COMPILE_BACKEND)
        self.D_seen_by_G = torch.compile(self.D, backend=COMPILE_BACKEND)
        return step

    def autocast(self) -> AbstractContextManager[Any]:
        """The forwards' autocast context for ``train.precision`` (none for fp32)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _shard_images(self) -> None:
        """Rank r samples from every world_size-th training image, starting at image r."""
        train_set = self.data.train_set
        if not isinstance(train_set, ImageDataset):
            # Toy points and stacked digits are drawn fresh: each rank's own random stream is
            # its shard (a stacked image is one of 4000^3 digit triples).
            return
        rank, world = self.dist.rank, self.dist.world_size
        self.data.train_set = type(train_set)(
            train_set.images[rank::world], train_set.labels[rank::world], train_set.class_names
        )

    # --- state ------------------------------------------------------------------------------

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.G

    def _rng_states(self) -> dict[str, Any]:
        states: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain data (``weights_only`` loadable).

        Under torchrun every rank must call it: it gathers each rank's random state.
        """
        state: dict[str, Any] = {
            "format": 1,
            "step": self.step,
            "d_step": self.d_step,
            "generator": self.G.state_dict(),
            "critic": self.D.state_dict(),
            "opt_generator": self.opt_G.state_dict(),
            "opt_critic": self.opt_D.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng_cpu": torch.get_rng_state(),
            "rng_diagnostic": self.diagnostic_rng.get_state(),
            "config_toml": to_toml(self.config),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.dist.enabled:
            state["rng_ranks"] = distributed.gather(self._rng_states(), self.dist)
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.scaler_D.is_enabled():
            state["scalers"] = {
                "critic": self.scaler_D.state_dict(),
                "generator": self.scaler_G.state_dict(),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (from ``torch.load(weights_only=True)``)."""
        self.step, self.d_step = int(state["step"]), int(state["d_step"])
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["critic"])
        self.opt_G.load_state_dict(state["opt_generator"])
        self.opt_D.load_state_dict(state["opt_critic"])
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self.diagnostic_rng.set_state(state["rng_diagnostic"])
        self._restore_rng(state)
        if self.ema is not None:
            if "ema" not in state:
                raise UserError("the checkpoint has no EMA generator but the config asks for one")
            self.ema.load_state_dict(state["ema"])
        # A run resumed in fp16 from another precision starts with fresh scalers.
        if self.scaler_D.is_enabled() and "scalers" in state:
            self.scaler_D.load_state_dict(state["scalers"]["critic"])
            self.scaler_G.load_state_dict(state["scalers"]["generator"])

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Each rank continues its own random stream; with a different number of ranks than
        the checkpoint's, each rank starts a fresh stream seeded from the step (the run goes
        on, but no longer equals an uninterrupted one)."""
        ranks = state.get("rng_ranks", [])
        if not self.dist.enabled:
            torch.set_rng_state(state["rng_cpu"])
            if "rng_cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        elif len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            torch.set_rng_state(mine["cpu"])
            if "cuda" in mine and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)
        else:
            torch.manual_seed(distributed.rank_seed(self.config.seed + self.step, self.dist.rank))

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / CHECKPOINT_NAME

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/last.pt`` atomically (rank 0; every rank takes part)."""
        state = self.state_dict()
        distributed.on_main(self.dist, lambda: save_atomic(state, self.checkpoint_path))

    def drop_metrics_after_checkpoint(self) -> None:
        """On resume: forget the metrics logged after the checkpoint (that work is redone)."""
        metrics = self.run_dir / "metrics.jsonl"
        if not self.dist.is_main or not metrics.exists():
            return
        kept = []
        for line in metrics.read_text().splitlines():
            step = _complete_record_step(line)
            if step is not None and step <= self.step:
                kept.append(line + "\n")
        write_text_atomic(metrics, "".join(kept))

    # --- one step of each network -----------------------------------------------------------

    def critic_step(self) -> dict[str, Tensor]:
        """One critic update on a fresh real batch and fresh fakes."""
        real, y = self.data.batch(self.config.train.batch_size)
        with torch.no_grad(), self.autocast():
            fake = generate(self.G, real.shape[0], y, self.device)
        # Under autocast the fakes are 16-bit; the critic's update takes them as the reals are.
        return self.critic_update(real, fake.to(real.dtype), y)

    def critic_update(self, real: Tensor, fake: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        """One critic update on the given batch.

        An every-step penalty joins the loss: one phase, one backward, one optimizer step. A lazy
        penalty (``every = k > 1``) follows StyleGAN2: a loss phase, then on every k-th critic
        step a penalty phase (the penalty's gain is then ``k x``); the critic's Adam lr and betas
        are corrected by ``k/(k+1)`` for those extra steps. Every critic forward runs through
        ``D_train``, so under DDP the penalty's gradient is averaged like the loss's.
        """
        active = self.penalty.active(self.d_step)
        lazy = self.penalty.every > 1
        if self.compiled_step is not None:
            stats = self.compiled_critic_phase(real, fake, y)
        else:
            stats = self.critic_phase(
                real, fake, y, with_loss=True, with_penalty=active and not lazy
            )
        if active and lazy:
            phase = self.critic_phase(real, fake, y, with_loss=False, with_penalty=True)
            stats["penalty"] = phase["penalty"]
        self.d_step += 1
        self._last = {"real": real.detach(), "fake": fake.detach(), "y": y}
        return stats

    def critic_phase(
        self, real: Tensor, fake: Tensor, y: Tensor | None, *, with_loss: bool, with_penalty: bool
    ) -> dict[str, Tensor]:
        """One phase of a critic update: the forwards, the objective, one backward, one step.

        Args:
            real, fake: the batches, ``(B, ...)``; y: their labels (None if unconditional).
            with_loss: the adversarial loss is in the objective. Without it (the lazy penalty
                phase) a zero-weighted sum of the scores stands in, so that every critic
                parameter is in the graph, which DDP needs on every backward.
            with_penalty: the penalty term at this critic step is in the objective.

        Returns:
            The detached ``d_loss``, ``penalty`` and ``wasserstein`` estimate of the phase.
        """
        pen = self.penalty
        reuse = with_penalty and self.config.penalty.reuse_forward and pen.spec.reuses_scores
        batches = {"real": real, "fake": fake}
        if reuse:  # fresh leaves: the penalty differentiates the loss's own forward (R1, R2)
            batches = {k: b.detach().requires_grad_(k in pen.needs) for k, b in batches.items()}

        def penalty_term(reused: dict[str, Any]) -> Tensor:
            return pen(
                self.D_seen,
                real=batches["real"],
                fake=batches["fake"],
                cond=y,
                step=self.d_step,
                real_scores=reused.get("real"),
                fake_scores=reused.get("fake"),
            )

        with self.autocast():
            # Without reuse the penalty goes first: its double backward then needs less memory.
            term = penalty_term({}) if with_penalty and not reuse else None
            outs: dict[str, Any] = {}
            for name, batch in batches.items():
                # Only a batch the penalty differentiates runs under penalty_forward: its twins
                # cost a few percent on a forward that nobody differentiates twice.
                differentiated = reuse and name in pen.needs
                with (
                    penalty_forward(pen.fast, critic=self.D_seen)
                    if differentiated
                    else nullcontext()
                ):
                    outs[name] = critic_output(self.D_seen, batch, y)
            if reuse:
                term = penalty_term(outs)
            if term is None:
                term = torch.zeros((), device=self.device)
            if with_loss:
                loss = losses.d_loss(self.config.train.loss, outs["real"], outs["fake"])
            else:
                anchor = sum(scores(out, batches[k].shape[0]).sum() for k, out in outs.items())
                loss = 0.0 * anchor
        terms = self._divergence_terms(loss if with_loss else None, term)
        if terms:  # (the float16 lazy penalty phase has none)
            self._check_finite(terms)
        self.opt_D.zero_grad(set_to_none=True)
        # Only the parameters: a batch that requires grad for forward reuse gets no gradient.
        self.scaler_D.scale(loss + term).backward(
            inputs=[p for p in self.D.parameters() if p.requires_grad]
        )
        skipped = self._optimizer_step(self.opt_D, self.scaler_D, "critic")
        if self.config.train.clip > 0:
            clip_weights_(self.D, self.config.train.clip)
        fp16 = (
            {"skipped": torch.tensor(float(skipped), device=self.device)}
            if self.scaler_D.is_enabled()
            else {}
        )
        return fp16 | {
            "d_loss": loss.detach().float(),
            "penalty": term.detach().float(),
            # E[D(real)] - E[D(fake)], the negated WGAN loss (per patch for a patch critic)
            "wasserstein": -losses.d_loss("wgan", outs["real"], outs["fake"]).detach().float(),
        }

    def compiled_critic_phase(
        self, real: Tensor, fake: Tensor, y: Tensor | None
    ) -> dict[str, Tensor]:
        """A critic update (loss and penalty) through the compiled step (``train.compile``).

        Args:
            real, fake: the batches, ``(B, ...)``; y: their labels (None if unconditional).

        Returns:
            The detached ``d_loss``, ``penalty`` and ``wasserstein`` estimate.
        """
        assert self.compiled_step is not None
        self.opt_D.zero_grad(set_to_none=True)
        with self.autocast():
            stats = self.compiled_step.update(real, fake, cond=y, step=self.d_step)
        self._check_finite({"critic loss": stats["d_loss"], "penalty": stats["penalty"]})
        self._optimizer_step(self.opt_D, self.scaler_D, "critic")
        if self.config.train.clip > 0:
            clip_weights_(self.D, self.config.train.clip)
        return {key: value.float() for key, value in stats.items()}

    def _divergence_terms(self, loss: Tensor | None, term: Tensor) -> dict[str, Tensor]:
        """The terms whose non-finite value stops training.

        Under float16 a non-finite penalty is the scaled input gradient overflowing: the
        scaler then skips the step and lowers its scale, so only the loss is checked.
        """
        terms = {} if loss is None else {"critic loss": loss}
        if not self.scaler_D.is_enabled():
            terms["penalty"] = term
        return terms

    def generator_step(self) -> Tensor:
        """One generator update against the current critic (frozen: it gets no gradient)."""
        batch = self.config.train.batch_size
        kind = self.config.train.loss
        real_scores = None
        with frozen(self.D):
            with self.autocast():
                if losses.needs_real_for_generator(kind):
                    real, y = self.data.batch(batch)
                    real_scores = critic_output(self.D_seen_by_G, real, y)
                else:
                    y = self.data.labels(batch)
                fake = generate(self.G, batch, y, self.device, forward=self.G_train)
                loss = losses.g_loss(kind, critic_output(self.D_seen_by_G, fake, y), real_scores)
            self._check_finite({"generator loss": loss})
            self.opt_G.zero_grad(set_to_none=True)
            self.scaler_G.scale(loss).backward()
        self._optimizer_step(self.opt_G, self.scaler_G, "generator")
        if self.ema is not None:
            self.ema.update_parameters(self.G)
        return loss.detach().float()

    def train_round(self) -> dict[str, Tensor]:
        """``n_critic`` critic steps then ``n_generator`` generator steps; one generator step
        of the schedule."""
        t = self.config.train
        steps = [self.critic_step() for _ in range(t.n_critic)]
        means = {key: finite_mean([stats[key] for stats in steps]) for key in steps[0]}
        g_losses = [self.generator_step() for _ in range(t.n_generator)]
        means["g_loss"] = torch.stack(g_losses).mean()
        for scheduler in self.schedulers:
            scheduler.step()
        self.step += 1
        return means

    # --- guards ---------------------------------------------------------------------------

    def _check_finite(self, terms: dict[str, Tensor], *, collective: bool = True) -> None:
        """Raise TrainingDiverged naming the first non-finite term (on any rank: all stop)."""
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        env = self.dist if collective else distributed.SINGLE
        finite = distributed.all_finite(values, env)
        for (name, value), ok in zip(terms.items(), finite.tolist(), strict=True):
            if not ok:
                shown = value.item() if not torch.isfinite(value) else "non-finite on another rank"
                raise TrainingDiverged(
                    f"the {name} became {shown} at generator step {self.step + 1} "
                    f"(critic step {self.d_step + 1}); training stopped and the last good "
                    f"checkpoint ({self.checkpoint_path}) was kept. Lower the learning rates or "
                    "raise the penalty weight."
                )

    def _optimizer_step(
        self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, name: str
    ) -> bool:
        """``optimizer.step()`` after the gradient check; under float16 the scaler's step.

        Float16: the gradients are unscaled, and a non-finite one means the scale overflowed:
        the scaler skips the step and halves the scale. Training stops only when the scale
        falls below :data:`MIN_LOSS_SCALE`, where even unscaled gradients overflow.

        Returns:
            Whether the step was skipped (float16 only).
        """
        if not scaler.is_enabled():
            self._check_gradients(optimizer, name)
            optimizer.step()
            return False
        scale = scaler.get_scale()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() < MIN_LOSS_SCALE:
            raise TrainingDiverged(
                f"the {name}'s float16 gradients overflow even unscaled (the GradScaler's scale "
                f"fell to {scaler.get_scale():g}) at generator step {self.step + 1}; training "
                f"stopped and the last good checkpoint ({self.checkpoint_path}) was kept. Use "
                "train.precision = 'bf16' or 'fp32', or lower the learning rates"
            )
        return scaler.get_scale() < scale

    def _check_gradients(self, optimizer: torch.optim.Optimizer, name: str) -> None:
        """Stop on a NaN or inf among the gradients of ``optimizer``'s parameters.

        One sum per tensor: a sum is NaN or inf when any element is, and finite gradients
        overflow it only beyond ~1e33, which is divergence anyway. (A max-norm over the same
        tensors cost as much as the fused Adam step on the toy networks.)
        """
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        sums = [g.sum(dtype=torch.float32) for g in grads if g is not None]
        total = torch.stack(sums).sum() if sums else None
        if total is not None and not torch.isfinite(total):
            # gradients are all-reduced, so every rank sees this: no collective needed
            self._check_finite({f"{name} gradient": total}, collective=False)

    # --- diagnostics ----------------------------------------------------------------------

    def gradient_norms(self) -> dict[str, float]:
        """Mean and std of the critic's input-gradient norm at interpolates, reals and fakes
        of the last critic batch (own RNG: does not perturb training)."""
        if not self._last:
            return {}
        real, fake, y = self._last["real"], self._last["fake"], self._last["y"]
        points = {
            "interp": interpolate(real, fake, generator=self._diagnostic_generator(real)),
            "real": real,
            "fake": fake,
        }
        stats = gradient_norm_stats(self.D, points, cond=y)
        return {f"gnorm_{name}_{k}": v[k] for name, v in stats.items() for k in ("mean", "std")}

    def _diagnostic_generator(self, like: Tensor) -> torch.Generator:
        if like.device.type == "cpu":
            return self.diagnostic_rng
        seed = int(torch.randint(2**62, (1,), generator=self.diagnostic_rng))
        return torch.Generator(device=like.device).manual_seed(seed)

    # --- the loop ---------------------------------------------------------------------------

    def prepare_run_dir(self) -> None:
        """Fail early if the run directory cannot hold the run; write ``config.toml`` (and
        ``classes.json``, label i's name, for an image folder's classes); clear the temporary
        files of a write that a crash interrupted (rank 0 only)."""
        check_writable(self.run_dir, needed_bytes=4 * _state_bytes(self) + 2**24)
        remove_stale_temporaries(self.checkpoint_path)
        write_text_atomic(self.run_dir / "config.toml", to_toml(self.config))
        train_set = self.data.train_set
        if isinstance(train_set, ImageDataset) and train_set.class_names:
            names = list(train_set.class_names)
            write_text_atomic(self.run_dir / "classes.json", json.dumps(names) + "\n")

    def _tensorboard(self, files: ExitStack) -> Any:
        """A TensorBoard ``SummaryWriter`` on the run directory, closed with ``files``.

        On resume it purges the events after the checkpoint's step, as the metrics are.
        """
        writer = _summary_writer_class()(
            log_dir=str(self.run_dir), purge_step=self.step + 1 if self.step else None
        )
        files.callback(writer.close)
        return writer

    def _stop_requested(self) -> bool:
        """Whether Ctrl-C (or SIGTERM) reached any rank: all ranks stop at the same step."""
        return distributed.any_rank(self._interrupted, self.dist, self.device)

    def _record(self, rounds: dict[str, list[Tensor]], started: float) -> dict[str, Any]:
        """The metrics record of the rounds since the last one, averaged over the ranks."""
        keys = list(rounds)
        means = distributed.mean_over_ranks(
            torch.stack([finite_mean(rounds[k]) for k in keys]), self.dist
        )
        record: dict[str, Any] = {"step": self.step, "critic_steps": self.d_step}
        record |= dict(zip(keys, means.tolist(), strict=True))
        record["step_time"] = (time.perf_counter() - started) / len(rounds[keys[0]])
        if self.dist.is_main:
            record |= self.gradient_norms()
        return record

    def train(self) -> dict[str, Any]:
        """Run to ``train.steps``, logging, checkpointing and plotting; returns the summary.

        Under torchrun every rank calls it; rank 0 writes the files and returns the summary,
        the others return the step counts only.
        """
        cfg = self.config
        main = self.dist.is_main
        distributed.on_main(self.dist, self.prepare_run_dir)
        bar = tqdm(
            total=cfg.train.steps,
            initial=self.step,
            desc="train",
            disable=None if cfg.log.progress and main else True,
            dynamic_ncols=True,
        )
        rounds: dict[str, list[Tensor]] = {}
        started = time.perf_counter()
        with _signals_set_flag(self), ExitStack() as files:
            metrics = (
                files.enter_context((self.run_dir / "metrics.jsonl").open("a")) if main else None
            )
            events = self._tensorboard(files) if main and cfg.log.tensorboard else None
            while self.step < cfg.train.steps and not self._stop_requested():
                for key, value in self.train_round().items():
                    rounds.setdefault(key, []).append(value)
                if self.step % cfg.log.every == 0 or self.step == cfg.train.steps:
                    record = self._record(rounds, started)
                    if metrics is not None:
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                    if events is not None:
                        _write_scalars(events, record)
                    bar.set_postfix(
                        d=f"{record['d_loss']:.3f}",
                        g=f"{record['g_loss']:.3f}",
                        W=f"{record['wasserstein']:.3f}",
                    )
                    rounds, started = {}, time.perf_counter()
                bar.update(1)
                if self.step % cfg.log.checkpoint_every == 0 or self.step == cfg.train.steps:
                    self.save_checkpoint()
                samples_every = cfg.log.samples_every or cfg.log.checkpoint_every
                if self.step % samples_every == 0:
                    picture = self.run_dir / "samples" / f"step_{self.step:07d}.png"
                    distributed.on_main(self.dist, lambda path=picture: self.save_samples(path))
        bar.close()
        if self._stop_requested():
            self.save_checkpoint()
            raise KeyboardInterrupt(
                f"interrupted at step {self.step}; checkpoint saved. Continue with "
                f"gradpen train --resume {self.run_dir}"
            )
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Evaluate, write ``summary.json`` and the final plots (rank 0); returns the summary."""
        steps = {"step": self.step, "critic_steps": self.d_step}
        summary = distributed.on_main(self.dist, self._evaluate_and_plot)
        return summary if summary is not None else steps

    def _evaluate_and_plot(self) -> dict[str, Any]:
        summary = {"step": self.step, "critic_steps": self.d_step, **self.evaluate()}
        write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        name = "surface.png" if self.is_toy else "samples.png"
        plots = [plot_curves_of(self.run_dir), self.save_samples(self.run_dir / name)]
        summary["plots"] = [str(p) for p in plots]
        return summary

    def samples01(self, n: int) -> tuple[Tensor, Tensor | None]:
        """``n`` samples of the sampler as the CLI exports them (see :func:`sample_images01`)."""
        return sample_images01(
            self.sampler, self.data, n, seed=self.config.seed, device=self.device
        )

    def evaluate(self) -> dict[str, Any]:
        """The run's quality metrics (see :func:`gradpen.train.evaluate.evaluate`)."""
        log = self.config.log
        return evaluate(
            self.sampler,
            self.data,
            n=log.eval_samples,
            seed=self.config.seed,
            device=self.device,
            inception=log.inception or None,
        )

    def save_samples(self, path: Path) -> Path:
        """A picture of the current samples: the critic surface (2-D) or an image grid."""
        return save_sample_picture(
            self.sampler,
            self.D,
            self.data,
            path,
            seed=self.config.seed,
            device=self.device,
            title=f"step {self.step}",
        )


def finite_mean(values: list[Tensor]) -> Tensor:
    """The mean of the finite ones among scalar ``values`` (NaN if none is finite).

    Only under float16 can a logged value be non-finite without stopping training: the
    penalty of a step whose scaled gradient overflowed, which the scaler skipped.
    """
    stacked = torch.stack(values)
    finite = torch.isfinite(stacked)
    return torch.where(finite, stacked, 0.0).sum() / finite.sum()


def _summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or a UserError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "log.tensorboard = true needs the tensorboard package, which is not installed: "
            "pip install 'gradpen[tensorboard]' (or pip install tensorboard), or set "
            "log.tensorboard = false (metrics.jsonl is written either way)"
        ) from None
    return SummaryWriter


def _write_scalars(writer: Any, record: dict[str, Any]) -> None:
    """Each number of a metrics record as a TensorBoard scalar at the record's step."""
    for key, value in record.items():
        if key != "step" and isinstance(value, int | float):
            writer.add_scalar(key, value, global_step=record["step"])
    writer.flush()


def _complete_record_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a crash


def _state_bytes(trainer: Trainer) -> int:
    params = [*trainer.G.parameters(), *trainer.D.parameters()]
    # weights + two Adam moments each, plus the EMA copy
    return sum(p.numel() * p.element_size() for p in params) * 4


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _signals_set_flag(trainer: Trainer) -> Iterator[None]:
    """The first Ctrl-C (or SIGTERM, as a scheduler or torchrun sends) ends the run at the next
    step boundary, after a checkpoint; a second one interrupts at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer._interrupted:
            raise KeyboardInterrupt
        trainer._interrupted = True

    try:
        previous = [signal.signal(number, handler) for number in STOP_SIGNALS]
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for number, handler_before in zip(STOP_SIGNALS, previous, strict=True):
            signal.signal(number, handler_before)
