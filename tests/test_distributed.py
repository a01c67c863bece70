"""Data-parallel training: 2 ranks on gloo (CPU) step exactly like 1 process on both batches.

The ranks are children of a forkserver: a clean, single-threaded process with torch already
imported, fast to fork and free of the locks that the test process's threads may hold when a
plain fork copies it (late in a full run, a forked rank once stayed alive after training, past
the deadline). Each case runs the critic's penalized update on each rank's half of a fixed
batch, in float64, and compares the critic with a single-process update on the whole batch.
WGAN-GP draws its interpolation coefficients at random; to compare the two runs the tests
replace ``interpolate`` with one whose coefficient is a fixed function of each sample, so that
the halves and the whole batch use the same coefficients.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

import gradpen.penalties
from gradpen.cli import main
from gradpen.errors import UserError
from gradpen.train import Trainer, load
from gradpen.train.checkpoint import load_checkpoint
from gradpen.train.distributed import SINGLE, DistEnv, env_from, wrap

WORLD = 2
SHARD = 6  # samples per rank
TIMEOUT = 90.0
RANKS = multiprocessing.get_context("forkserver")
RANKS.set_forkserver_preload(["torch", "gradpen.train"])

# (penalty, every, reuse_forward, critic steps): lazy R1 with every=2 runs on, off, on.
CASES = {
    "wgan-gp every step": ("wgan-gp", 1, False, 2),
    "r1 reusing the loss forward": ("r1", 1, True, 2),
    "lazy r1, on and off steps": ("r1", 2, True, 3),
}


def fixed_interpolate(real: Tensor, fake: Tensor, *, generator: object = None) -> Tensor:
    """Interpolates whose coefficient depends on the sample only (not on the RNG)."""
    eps = torch.sigmoid(3 * real.flatten(1).sum(1)).view(-1, *([1] * (real.dim() - 1)))
    return eps * real + (1 - eps) * fake


def case_trainer(penalty: str, every: int, reuse: bool, run_dir: Path) -> Trainer:
    config = load(
        None,
        [
            "data.name='8gaussians'",
            "critic.width=16",
            "critic.depth=2",
            "critic.activation='leaky_relu'",
            "generator.width=8",
            f"penalty.name='{penalty}'",
            f"penalty.every={every}",
            f"penalty.reuse_forward={'true' if reuse else 'false'}",
            "penalty.weight=1.0",
            "train.d_lr=0.01",
            "log.progress=false",
        ],
    )
    return Trainer(config, run_dir)


def batches(step: int) -> tuple[Tensor, Tensor]:
    """The global (real, fake) batch of critic step ``step``: 2 x SHARD samples, float64."""
    rng = torch.Generator().manual_seed(100 + step)
    return (
        torch.randn(WORLD * SHARD, 2, generator=rng, dtype=torch.float64),
        torch.randn(WORLD * SHARD, 2, generator=rng, dtype=torch.float64),
    )


def critic_after_updates(case: str, rows: slice, run_dir: Path) -> dict[str, Tensor]:
    """The critic's parameters after the case's updates on ``rows`` of each global batch."""
    penalty, every, reuse, steps = CASES[case]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        trainer = case_trainer(penalty, every, reuse, run_dir)
        for step in range(steps):
            real, fake = batches(step)
            trainer.critic_update(real[rows], fake[rows], None)
    finally:
        torch.set_default_dtype(previous)
    return {name: p.detach().clone() for name, p in trainer.D.named_parameters()}


def parameters(trainer: Trainer) -> dict[str, Tensor]:
    nets = {"G": trainer.G, "D": trainer.D}
    return {
        f"{n}.{k}": v.detach().clone() for n, net in nets.items() for k, v in net.named_parameters()
    }


def rounds_on_own_data(run_dir: Path) -> dict[str, dict[str, Tensor]]:
    """Full rounds on each rank's own random batches: 4 straight, and 2 + a resume + 2."""
    straight = case_trainer("r1", 2, True, run_dir)
    first_real = None
    for _ in range(4):
        straight.train_round()
        first_real = straight._last["real"] if first_real is None else first_real
    interrupted = case_trainer("r1", 2, True, run_dir)
    for _ in range(2):
        interrupted.train_round()
    state = interrupted.state_dict()  # before the next Trainer reseeds the global RNG
    resumed = case_trainer("r1", 2, True, run_dir)
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.train_round()
    return {
        "straight": parameters(straight) | {"first_real": first_real},
        "resumed": parameters(resumed),
    }


def _rank_main(rank: int, tmp: Path) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp / 'rendezvous'}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=TIMEOUT),
    )
    gradpen.penalties.interpolate = fixed_interpolate
    rows = slice(rank * SHARD, (rank + 1) * SHARD)
    results = {case: critic_after_updates(case, rows, tmp / "unused") for case in CASES}
    results |= rounds_on_own_data(tmp / "unused")
    torch.save(results, tmp / f"rank{rank}.pt")
    dist.destroy_process_group()


def run_ranks(target: Callable[..., None], args_of: Callable[[int], tuple]) -> None:
    """Fork WORLD processes running ``target(*args_of(rank))``; all must exit 0 in time."""
    procs = [RANKS.Process(target=target, args=args_of(rank)) for rank in range(WORLD)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + TIMEOUT
    try:
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        assert [proc.exitcode for proc in procs] == [0] * WORLD
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    run_ranks(_rank_main, lambda rank: (rank, tmp))
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process_on_the_concatenated_batch(
    case, rank_results, tmp_path, monkeypatch
):
    monkeypatch.setattr(gradpen.penalties, "interpolate", fixed_interpolate)
    single = critic_after_updates(case, slice(None), tmp_path)
    first, second = (results[case] for results in rank_results)
    initial = case_trainer(*CASES[case][:3], tmp_path).D.state_dict()
    for name, value in single.items():
        assert torch.equal(first[name], second[name]), name
        torch.testing.assert_close(first[name], value, rtol=0, atol=1e-6)
        assert not torch.allclose(value.float(), initial[name]), f"{name} did not move"


def test_full_rounds_keep_the_ranks_identical_and_resume_exactly(rank_results):
    first, second = (results["straight"] for results in rank_results)
    assert not torch.equal(first["first_real"], second["first_real"])  # each rank its own data
    for results in rank_results:
        for name, value in results["resumed"].items():
            assert torch.equal(value, results["straight"][name]), name
    for name in rank_results[0]["resumed"]:
        assert torch.equal(first[name], second[name]), name


def test_static_graph_is_refused_and_one_rank_is_not_wrapped():
    net = nn.Linear(2, 1)
    with pytest.raises(UserError, match="static_graph=True is not supported"):
        wrap(net, DistEnv(0, 2, 0), torch.device("cpu"), static_graph=True)
    assert wrap(net, SINGLE, torch.device("cpu")) is net


def test_torchrun_environment_is_read_and_checked():
    assert env_from({}) == SINGLE
    assert env_from({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == DistEnv(1, 4, 1)
    with pytest.raises(UserError, match="RANK=4, WORLD_SIZE=4"):
        env_from({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UserError, match="WORLD_SIZE='two' must be an integer"):
        env_from({"WORLD_SIZE": "two"})


def _torchrun_rank(rank: int, port: int, argv: list[str]) -> None:
    """What ``torchrun --nproc_per_node=2 -m gradpen ARGV`` runs on one rank."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",  # the rendezvous store is torchrun's, not rank 0's
    )
    raise SystemExit(main(argv))


def torchrun_train(*argv: str) -> None:
    """The ranks of a torchrun launch, with the store torchrun's agent would hold."""
    store = dist.TCPStore("127.0.0.1", 0, WORLD, is_master=True, wait_for_workers=False)
    run_ranks(_torchrun_rank, lambda rank: (rank, store.port, ["train", *argv]))


TINY = [
    "data.name='8gaussians'",
    "generator.width=16",
    "critic.width=16",
    "train.n_critic=2",
    "train.batch_size=16",
    "penalty.name='r1'",
    "penalty.every=2",
    "log.every=2",
    "log.checkpoint_every=4",
    "log.samples_every=100",
    "log.eval_samples=200",
    "log.progress=false",
]


def test_torchrun_cli_run_writes_each_file_once(tmp_path):
    sets = [arg for value in TINY for arg in ("--set", value)]
    torchrun_train("--out", str(tmp_path / "run"), *sets, "--set", "train.steps=4")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 4 and len(state["rng_ranks"]) == WORLD
    assert not torch.equal(state["rng_ranks"][0]["cpu"], state["rng_ranks"][1]["cpu"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps == [2, 4]  # rank 0 alone writes
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 4
