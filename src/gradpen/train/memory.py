"""Out-of-memory as a user error: what did not fit, and which config keys to lower.

Before training, :func:`check_step_memory` measures what one sample costs the networks (the
outputs of every layer in a forward of two samples) and refuses a batch whose activations alone
could not fit in the memory available: on Linux a large batch would otherwise not fail cleanly
but be killed by the kernel's out-of-memory killer, part-way into the first steps. The estimate
is a lower bound (the generator's forward and three critic forwards: reals, fakes, penalty
points; the double backward needs more), so it never refuses a run that would fit.

During training, an allocation that fails (``torch.OutOfMemoryError`` on a GPU,
``DefaultCPUAllocator: can't allocate memory`` on the CPU, ``MemoryError`` in Python or NumPy)
almost always comes from a size the user chose: the batch, the width of the networks, the number
of evaluation samples. The loop writes checkpoints atomically and never on the way out of a
failure, so the last good checkpoint stays as it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrize import is_parametrized

from gradpen.errors import UserError
from gradpen.outputs import critic_output
from gradpen.train.checkpoint import CHECKPOINT_NAME
from gradpen.train.config import Config
from gradpen.train.loop import Trainer, generate

_CPU_REQUEST = re.compile(r"tried to allocate (\d+) bytes")
_CUDA_REQUEST = re.compile(r"Tried to allocate ([\d.]+ [KMGTP]?i?B)")
_MARKERS = ("can't allocate memory", "out of memory")
PROBE_BATCH = 2
CRITIC_FORWARDS = 3  # a critic step runs the critic on reals, fakes and the penalty's points


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a failed allocation (and not some other RuntimeError)."""
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _MARKERS)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _request(error: BaseException) -> str:
    """The size of the allocation that failed, as the error states it."""
    text = str(error)
    if match := _CPU_REQUEST.search(text):
        return f"an allocation of {_gib(int(match.group(1)))} failed"
    if match := _CUDA_REQUEST.search(text):
        return f"an allocation of {match.group(1)} failed"
    return "an allocation failed"


def _capacity(device: str) -> str:
    """The memory of ``device`` (the machine's RAM for the CPU)."""
    try:
        if device.startswith("cuda") and torch.cuda.is_available():
            return f"{_gib(torch.cuda.get_device_properties(torch.device(device)).total_memory)}"
        return _gib(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, RuntimeError, AssertionError):
        return "unknown"


def available_bytes(device: torch.device) -> int:
    """Memory a new allocation on ``device`` can get (free GPU memory; Linux MemAvailable)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def _probing(trainer: Trainer) -> Iterator[None]:
    """Run a probe forward that leaves no trace: random states and layer modes are restored."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    modes = [(m, m.training) for net in (trainer.G, trainer.D) for m in net.modules()]
    trainer.G.eval()  # eval: batch-norm statistics and spectral-norm vectors stay as they are
    trainer.D.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _output_bytes(net: nn.Module, run: list[int]) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks adding the bytes of every layer output of ``net`` to ``run[0]`` (a layer: a module
    without children, or one with a parametrization such as spectral norm; not the
    parametrization's own modules, whose outputs are weights, not activations)."""

    def count(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            run[0] += output.numel() * output.element_size()

    layers = [
        m
        for name, m in net.named_modules()
        if (not list(m.children()) or is_parametrized(m)) and ".parametrizations." not in name
    ]
    return [m.register_forward_hook(count) for m in layers]


def step_bytes_per_sample(trainer: Trainer) -> int:
    """A lower bound on the memory one sample of the batch costs a training step."""
    g_bytes, d_bytes = [0], [0]
    hooks = _output_bytes(trainer.G, g_bytes) + _output_bytes(trainer.D, d_bytes)
    try:
        with _probing(trainer):
            real, y = trainer.data.batch(PROBE_BATCH)
            generate(trainer.G, PROBE_BATCH, y, trainer.device)
            critic_output(trainer.D, real, y)
    finally:
        for hook in hooks:
            hook.remove()
    data = real.numel() * real.element_size()
    return (g_bytes[0] + CRITIC_FORWARDS * (d_bytes[0] + data)) // PROBE_BATCH


def check_step_memory(trainer: Trainer) -> None:
    """Refuse, before training, a batch whose activations alone exceed the available memory."""
    per_sample = step_bytes_per_sample(trainer)
    batch = trainer.config.train.batch_size
    available = available_bytes(trainer.device)
    if per_sample * batch > available:
        raise UserError(
            f"train.batch_size = {batch} does not fit in memory on {trainer.device}: a training "
            f"step needs at least {_gib(per_sample * batch)} for the networks' activations "
            f"({per_sample} bytes per sample; {_net_sizes(trainer.config)}) and "
            f"{_gib(available)} is available. Lower train.batch_size to at most about "
            f"{available // max(per_sample, 1)} (less leaves room for the rest of the step), or "
            "the network width; nothing was trained"
        )


def _net_sizes(config: Config) -> str:
    parts = []
    for name, net in (("generator", config.generator), ("critic", config.critic)):
        options = ", ".join(
            f"{name}.{key} = {value}"
            for key, value in net.options.items()
            if key in ("width", "depth", "channels")
        )
        parts.append(f"{name}.kind = {net.kind!r}" + (f", {options}" if options else ""))
    return "; ".join(parts)


def out_of_memory_error(error: BaseException, config: Config, run_dir: Path) -> UserError:
    """A UserError for an allocation that failed while training ``config`` in ``run_dir``."""
    t = config.train
    checkpoint = run_dir / "checkpoints" / CHECKPOINT_NAME
    kept = (
        f"the last good checkpoint ({checkpoint}) was kept"
        if checkpoint.is_file()
        else "no checkpoint had been written yet"
    )
    return UserError(
        f"out of memory on {t.device} (memory: {_capacity(t.device)}): {_request(error)}. "
        f"The run asked for train.batch_size = {t.batch_size}, log.eval_samples = "
        f"{config.log.eval_samples}, {_net_sizes(config)}. Lower train.batch_size first (memory "
        "grows with it), then the network width or log.eval_samples; "
        f"{kept}"
    )
