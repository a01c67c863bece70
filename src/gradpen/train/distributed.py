"""Data-parallel training on ``torch.distributed``: join the torchrun group, wrap, agree, leave.

``torchrun --nproc_per_node=N -m gradpen train CONFIG.toml`` starts N copies of the run. Each
copy (a *rank*) reads RANK / WORLD_SIZE / LOCAL_RANK from its environment, joins the process
group (gloo on CPU, nccl on CUDA, one GPU per rank: ``cuda:LOCAL_RANK``), wraps each network in
its own ``DistributedDataParallel`` and draws its own ``batch_size`` samples from its own random
stream: the global batch is ``batch_size x WORLD_SIZE``. DDP averages the gradients over ranks,
so a step equals a single-process step on the concatenated batch. Only rank 0 writes files
(metrics, checkpoints, pictures, evaluation); the others wait for it.

Why the penalty is safe under DDP here, and the traps it avoids:

- ``autograd.grad`` (the penalty's input gradient) is not all-reduced, only ``backward`` is. The
  loop adds the penalty to the loss and calls one ``backward``, so the penalty's parameter
  gradient is averaged over ranks with the rest.
- A penalty-only backward (a lazy-regularization phase on its own) can leave parameters out of
  the graph; DDP then fails on the next step ("Expected to have finished reduction").
  The loop never does one: on lazy off-steps the loss still runs both critic forwards, and on
  on-steps the penalty joins the same backward.
- ``static_graph=True`` lets DDP skip synchronization it believes unchanged, which the penalty's
  double backward breaks silently; :func:`wrap` refuses it.
- The critic's forward passes of a critic step (the loss's, and the penalty's own through
  ``input_gradient``) all go through the DDP wrapper; the generator step calls the bare critic
  with its parameters frozen, so no critic gradient is made or reduced there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from gradpen.errors import UserError

RANK_SEED_STRIDE = 1_000_003  # rank r draws from seed + r * stride: streams that never meet
T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job: its rank, the number of ranks, its local GPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there is more than one rank (collectives are needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files."""
        return self.rank == 0


SINGLE = DistEnv()
_owned_group = False  # whether gradpen initialized the process group (and must destroy it)


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} must be an integer") from None


def env_from(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """The rank layout torchrun describes in ``environ`` (one rank when it says nothing)."""
    world = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", 0)
    local = _env_int(environ, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local}; need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
        )
    return DistEnv(rank, world, local)


def join(device: torch.device) -> tuple[DistEnv, torch.device]:
    """This process's place in the job and the device it trains on.

    Uses a process group that is already initialized; otherwise initializes one from the
    torchrun environment (gloo for CPU, nccl for CUDA) when it names more than one rank.
    Under CUDA each rank trains on ``cuda:LOCAL_RANK``.
    """
    global _owned_group
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        env = DistEnv(rank, world, _env_int(os.environ, "LOCAL_RANK", rank))
    else:
        env = env_from()
        if not env.enabled:
            return env, device
        if not dist.is_available():
            raise UserError("this PyTorch build has no torch.distributed; run without torchrun")
        if device.type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _owned_group = True
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    return env, device


def leave(*, wait_for_others: bool = True) -> None:
    """Destroy the process group if :func:`join` created it (a clean exit for every rank).

    ``wait_for_others``: first wait until every rank gets here, so that no rank tears the
    group down while another still uses it; pass False when leaving on an error that other
    ranks may not share (they may never arrive).
    """
    global _owned_group
    if _owned_group and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()
    _owned_group = False


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s data and noise stream."""
    return seed + RANK_SEED_STRIDE * rank


def wrap(
    module: nn.Module,
    env: DistEnv,
    device: torch.device,
    *,
    static_graph: bool = False,
    **ddp_options: Any,
) -> nn.Module:
    """``module`` in its own DistributedDataParallel wrapper (``module`` itself on one rank).

    ``static_graph=True`` is refused: with a gradient penalty the double backward changes which
    gradients DDP sees, and a static graph then skips synchronization without an error.
    """
    if static_graph:
        raise UserError(
            "static_graph=True is not supported with gradient penalties: DDP would skip "
            "gradient synchronization after the penalty's double backward and the ranks would "
            "drift apart silently; leave static_graph off"
        )
    if not env.enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **ddp_options)


def all_finite(values: Tensor, env: DistEnv) -> Tensor:
    """Per entry of the 1-D ``values``: whether it is finite on every rank (bool tensor)."""
    finite = torch.isfinite(values).to(torch.int32)
    if env.enabled:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return finite.bool()


def any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (so that every rank takes the same branch)."""
    if not env.enabled:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: Tensor, env: DistEnv) -> Tensor:
    """The mean of ``values`` over ranks (``values`` itself on one rank)."""
    if not env.enabled:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total / env.world_size


def gather(obj: T, env: DistEnv) -> list[T]:
    """``obj`` from every rank, in rank order (``[obj]`` on one rank)."""
    if not env.enabled:
        return [obj]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def on_main(env: DistEnv, action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 while the other ranks wait; returns its result on rank 0.

    If it fails, every rank raises (rank 0 the original error, the others a UserError quoting
    it), so that no rank waits forever for a rank that stopped.
    """
    if not env.enabled:
        return action()
    failure: list[str | None] = [None]
    result = None
    try:
        if env.is_main:
            try:
                result = action()
            except BaseException as error:
                failure[0] = f"{type(error).__name__}: {error}"
                raise
    finally:
        dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        raise UserError(f"rank 0 stopped the run: {failure[0]}")
    return result
