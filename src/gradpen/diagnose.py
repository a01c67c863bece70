"""What a critic does to a gradient penalty: one check run before training.

:func:`diagnose` runs one R1-style penalty (the input gradient at ``x``, then the backward of its
squared norm to the critic's parameters: a real double backward) on a small batch and reports:

- **operations without a double backward**, by module path: while the penalty's forward runs,
  forward hooks attribute every autograd node to the innermost module that created it (nodes
  are numbered in creation order, so a module owns the nodes numbered after its call began that
  its outputs reach and no inner module claimed). When the double backward raises, each module
  is re-run alone on the inputs it received and differentiated twice; the failing modules none
  of whose children fail are the ones named.
- **layers that mix samples**: batch norm with batch statistics, by type and path; and
  numerically, any layer: sample 0 of ``x`` is changed and every other sample's score must stay
  the same (dropout draws the same masks in both forwards); the innermost modules whose
  unchanged samples' outputs changed although their inputs did not are named.
- **how the outputs were reduced** to one score per sample (a note).
- **what the fast path covers**: which convolutions and ReLU / leaky ReLU calls ran as
  :mod:`gradpen.fastpath`'s exact twins and which ran as plain autograd (notes).

The critic's buffers (e.g. batch-norm running stats, spectral-norm vectors) and the global
random state are restored afterwards; parameter ``.grad`` fields are not touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from gradpen import fastpath, outputs
from gradpen.gradients import (
    NoDoubleBackward,
    eager_original,
    graph_nodes,
    input_gradient,
    penalty_forward,
    uses_batch_statistics,
)
from gradpen.outputs import Critic
from gradpen.penalties import squared_norm

__all__ = ["Diagnosis", "diagnose"]

_PLAIN_CONVOLUTION = "ConvolutionBackward0"
_PLAIN_ACTIVATIONS = {
    "ReluBackward0": "ReLU",
    "LeakyReluBackward0": "leaky ReLU",
    "LeakyReluBackward1": "leaky ReLU",
}


@dataclass
class Diagnosis:
    """What :func:`diagnose` found.

    Attributes:
        problems: reasons the penalty cannot be computed exactly on this critic (an operation
            without a double backward, layers that mix samples); empty when it can.
        notes: information: how the outputs are reduced, what the fast path covers.
        no_double_backward: module paths whose operations have no double backward.
        mixing: module paths of layers that mix samples.
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    no_double_backward: list[str] = field(default_factory=list)
    mixing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the penalty can be computed exactly and samples do not mix."""
        return not self.problems

    def __str__(self) -> str:
        head = "OK: the penalty can be computed exactly" if self.ok else "NOT OK"
        lines = [f"gradpen.diagnose: {head}"]
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def diagnose(
    critic: Critic, x: Tensor, cond: Any = None, *, reduce: str = "sum", fast: bool = True
) -> Diagnosis:
    """Check what a critic does to a gradient penalty, on a small batch.

    Args:
        critic: the critic, as given to a penalty; an ``nn.Module`` lets layers be named (any
            callable works otherwise).
        x: a small batch of inputs, ``(B, ...)`` with ``B >= 2``, floating point.
        cond: the condition of a conditional critic, passed as ``critic(x, cond)``.
        reduce: ``"sum"`` or ``"mean"``: how outputs become scores (see :mod:`gradpen.outputs`).
        fast: run the penalty through :mod:`gradpen.fastpath`, as the penalties do by default.

    Returns:
        A :class:`Diagnosis`; ``.ok`` is False exactly when an operation has no double
        backward or samples mix.

    Raises:
        ValueError: ``x`` is not a floating-point batch of at least 2 samples, the critic cannot
            run on it, or its output does not have ``x``'s batch size.
    """
    if not isinstance(x, Tensor) or x.dim() < 1 or not x.is_floating_point():
        raise ValueError(
            "x must be a floating-point tensor with a batch dim, (B, ...); got "
            + (f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else repr(x))
        )
    if x.shape[0] < 2:
        raise ValueError(
            f"x must hold at least 2 samples (got shape {tuple(x.shape)}): diagnose changes one "
            "sample to see whether the others' scores move"
        )
    outputs.check_reduce(reduce)
    critic = eager_original(critic)
    if not isinstance(critic, nn.Module):
        critic = _Callable(critic)
    modules = dict(critic.named_modules())
    report = Diagnosis()
    with _restored(critic, x):
        _check_batchnorm(modules, report)
        out = _check_mixing(critic, x, cond, modules, report)
        report.notes.append(_describe_outputs(out, x.shape[0], reduce))
        _check_double_backward(critic, x, cond, modules, reduce, fast, report)
    if isinstance(critic, _Callable):
        report.notes.append(
            "the critic is a plain callable, not an nn.Module: its layers cannot be named or "
            "checked for batch norm, and its buffers are not restored afterwards; pass a module "
            "(e.g. nn.Sequential(augment, critic)) for that"
        )
    return report


class _Callable(nn.Module):
    """A critic given as a plain callable, as a module, so that hooks can watch its forward."""

    def __init__(self, function: Critic) -> None:
        super().__init__()
        self.function = function

    def forward(self, *args: Any) -> Any:
        return self.function(*args)


@contextlib.contextmanager
def _restored(critic: nn.Module, x: Tensor) -> Iterator[None]:
    """Restore the critic's buffers and the random state after the block."""
    buffers = list(critic.buffers())
    saved = [buffer.detach().clone() for buffer in buffers]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


def _name(path: str, modules: Mapping[str, nn.Module]) -> str:
    module = modules[path]
    if isinstance(module, _Callable):
        return "the critic (a callable)"
    kind = type(module).__name__
    return f"the critic itself ({kind})" if path == "" else f"layer '{path}' ({kind})"


def _batch_tensors(value: Any) -> Iterator[Tensor]:
    """The tensors in a (nested) module input or output."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _batch_tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _batch_tensors(item)


def _call(critic: Critic, x: Tensor, cond: Any) -> Any:
    return critic(x) if cond is None else critic(x, cond)


# --- samples that mix -----------------------------------------------------------------------------


def _check_batchnorm(modules: Mapping[str, nn.Module], report: Diagnosis) -> None:
    for path, module in modules.items():
        if uses_batch_statistics(module):
            why = "in training mode" if module.training else "without running stats"
            report.mixing.append(path)
            report.problems.append(
                f"{_name(path, modules)} is batch norm using batch statistics ({why}): it mixes "
                "samples, so a sample's gradient is not the per-sample gradient the penalty "
                "assumes; use layer, group or instance norm, or none"
            )


class _Recorder:
    """Forward hooks that keep each module's first inputs and outputs (detached)."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.seen: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
        self.handles = [
            module.register_forward_hook(self._hook(path), with_kwargs=True)
            for path, module in modules.items()
        ]

    def _hook(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            if path not in self.seen:
                inputs = [t.detach().clone() for t in _batch_tensors((args, kwargs))]
                self.seen[path] = (inputs, [t.detach().clone() for t in _batch_tensors(out)])

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _others_changed(before: list[Tensor], after: list[Tensor], batch: int) -> bool:
    """Whether samples 1..B-1 differ between two recordings of batch-shaped tensors."""
    for a, b in zip(before, after, strict=False):
        if a.dim() > 0 and a.shape[0] == batch and a.shape == b.shape and a.is_floating_point():
            scale = a[1:].abs().max().item()
            if (a[1:] - b[1:]).abs().max().item() > 1e-5 * (1.0 + scale):
                return True
    return False


def _check_mixing(
    critic: Critic, x: Tensor, cond: Any, modules: Mapping[str, nn.Module], report: Diagnosis
) -> Any:
    """Change sample 0 and watch the other samples' scores; returns the critic's output on x."""
    batch = x.shape[0]
    changed = x.detach().clone()
    changed[0] += torch.randn_like(changed[0]) * (1.0 + x.detach().std())
    runs = []
    for inputs in (x.detach(), changed):
        recorder = _Recorder(modules)
        torch.manual_seed(0)  # the same dropout masks in both forwards
        try:
            with torch.no_grad():
                out = _call(critic, inputs, cond)
        except RuntimeError as error:
            raise ValueError(
                f"the critic could not run on x of shape {tuple(x.shape)} ({error}); x must be a "
                "batch (B, ...) of what the critic takes"
            ) from error
        finally:
            recorder.remove()
        scores = outputs.scores(out, batch, "sum")
        runs.append((out, scores, recorder.seen))
    (out, before, seen_before), (_, after, seen_after) = runs
    if not _others_changed([before], [after], batch):
        return out
    mixing = [
        path
        for path in seen_before
        if _others_changed(seen_before[path][1], seen_after[path][1], batch)
        and not _others_changed(seen_before[path][0], seen_after[path][0], batch)
    ]
    innermost = [p for p in mixing if not any(_inside(q, p) for q in mixing)]
    new = [p for p in innermost if p not in report.mixing]
    if innermost and not new:
        return out  # the batch norm layers already reported
    report.mixing += new
    where = ", ".join(_name(p, modules) for p in new) if new else "somewhere in the critic"
    report.problems.append(
        f"samples mix: changing sample 0 of x changed the scores of the other samples; the "
        f"mixing happens in {where}, as in a minibatch-stddev layer, so a sample's gradient is "
        "not the per-sample gradient the penalty assumes"
    )
    return out


def _inside(inner: str, outer: str) -> bool:
    """Whether module path ``inner`` is strictly inside ``outer``."""
    return inner != outer and (outer == "" or inner.startswith(outer + "."))


# --- the outputs --------------------------------------------------------------------------------


def _describe_outputs(out: Any, batch: int, reduce: str) -> str:
    """A sentence on what the critic returns and how it becomes one score per sample."""
    found = outputs.leaves(out, batch)

    def shape(t: Tensor) -> str:
        return "(B,)" if t.dim() == 1 else "(B, " + ", ".join(str(s) for s in t.shape[1:]) + ")"

    per_sample = sum(t[0].numel() for _, t in found)
    if isinstance(out, Tensor):
        if out[0].numel() == 1:
            return f"the critic returns one score per sample, shape {shape(out)}"
        return (
            f"the critic returns a tensor {shape(out)}; the per-sample score is the {reduce} of "
            f"its {per_sample} elements (reduce={reduce!r})"
        )
    kind = "dict" if isinstance(out, Mapping) else type(out).__name__
    listed = ", ".join(f"{path} {shape(t)}" for path, t in found)
    return (
        f"the critic returns a {kind} of {len(found)} outputs: {listed}; the per-sample score is "
        f"the sum over all {len(found)} of the {reduce} of their elements ({per_sample} elements "
        f"per sample, reduce={reduce!r})"
    )


# --- the double backward and the fast path ------------------------------------------------------


class _Attribution:
    """Forward hooks that map each autograd node of a forward to its innermost module.

    A node belongs to a module if it was created after the module's call began (autograd numbers
    nodes in creation order) and the module's outputs reach it; children's hooks run first, so
    a node is claimed by the innermost module. Also keeps each module's first inputs.
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.owner: dict[Any, str] = {}
        self.inputs: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._start: dict[str, list[int]] = {}
        self._probe = torch.zeros((), requires_grad=True)
        self.handles = []
        for path, module in modules.items():
            self.handles.append(
                module.register_forward_pre_hook(self._pre_hook(path), with_kwargs=True)
            )
            self.handles.append(module.register_forward_hook(self._hook(path)))

    def _pre_hook(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            self.inputs.setdefault(path, _detached_call(args, kwargs))
            # a throwaway node: its number is the first one this call can create
            self._start.setdefault(path, []).append(self._probe.view(()).grad_fn._sequence_nr())

        return hook

    def _hook(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            start = self._start[path].pop()
            stack = [t.grad_fn for t in _batch_tensors(out) if t.grad_fn is not None]
            seen: set[Any] = set()
            while stack:
                node = stack.pop()
                if node is None or node in seen or node._sequence_nr() < start:
                    continue
                seen.add(node)
                self.owner.setdefault(node, path)
                stack.extend(next_node for next_node, _ in node.next_functions)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _detached_call(args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A module call's arguments with tensors detached and cloned; floats keep requires_grad."""

    def copy(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value.detach().clone().requires_grad_(value.requires_grad)
        if isinstance(value, list | tuple):
            return type(value)(copy(item) for item in value)
        if isinstance(value, dict):
            return {key: copy(item) for key, item in value.items()}
        return value

    return copy(tuple(args)), copy(dict(kwargs))


def _check_double_backward(
    critic: Critic,
    x: Tensor,
    cond: Any,
    modules: Mapping[str, nn.Module],
    reduce: str,
    fast: bool,
    report: Diagnosis,
) -> None:
    """Run the penalty's double backward; name the modules that fail; note the fast path."""
    attribution = _Attribution(modules)
    try:
        error = _penalty_error(critic, x, cond, reduce, fast)
    finally:
        attribution.remove()
    report.notes.append(_fast_path_note(attribution.owner, modules, fast))
    if error is None:
        return
    culprits = [
        path
        for path in attribution.inputs
        if _fails_twice(modules[path], *attribution.inputs[path], fast)
    ]
    innermost = [p for p in culprits if not any(_inside(q, p) for q in culprits)]
    report.no_double_backward += innermost
    message = (
        "its backward cannot be differentiated: a custom Function marked @once_differentiable "
        "or an op without a double-backward formula"
        if isinstance(error, NoDoubleBackward)
        else str(error).strip().splitlines()[0]
    )
    if not innermost:
        report.problems.append(f"the penalty's double backward fails: {message}")
        return
    for path in innermost:
        report.problems.append(
            f"{_name(path, modules)} has an operation without a double backward, so the "
            f"penalty cannot be computed through it ({message}). Write its backward "
            "with differentiable operations (no @once_differentiable), use an operation that "
            "has a double backward, or train with an approximate penalty ('approx-r1')"
        )


def _penalty_error(
    critic: Critic, x: Tensor, cond: Any, reduce: str, fast: bool
) -> Exception | None:
    """The error of one R1-style penalty's double backward, or None when it runs."""
    try:
        grad = input_gradient(critic, x, cond=cond, allow_batchnorm=True, fast=fast, reduce=reduce)
        _backward_to_leaves(squared_norm(grad).sum())
    except (RuntimeError, NoDoubleBackward) as error:  # NotImplementedError included
        return error
    return None


def _backward_to_leaves(total: Tensor) -> None:
    """``total.backward()`` without touching ``.grad``: the gradient of every leaf in its graph.

    Every leaf, not just the parameters: a ``@once_differentiable`` backward hangs its error
    node on a detached leaf of its own, which a backward restricted to the parameters skips
    (silently dropping the gradient through it).
    """
    if not total.requires_grad:
        return
    leaves = [node.variable for node in graph_nodes(total) if hasattr(node, "variable")]
    torch.autograd.grad(total, leaves, allow_unused=True)


def _fails_twice(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], fast: bool
) -> bool:
    """Whether ``module`` alone, on the inputs it was given, fails a double backward."""
    inputs = [t for t in _batch_tensors((args, kwargs)) if t.requires_grad]
    try:
        with penalty_forward(fast):
            out = module(*args, **kwargs)
    except RuntimeError:
        return False  # it does not run alone: nothing to learn from it
    results = [t for t in _batch_tensors(out) if t.requires_grad]
    if not inputs or not results:
        return False
    upstream = [torch.randn_like(t, requires_grad=True) for t in results]
    try:
        grads = torch.autograd.grad(results, inputs, upstream, create_graph=True, allow_unused=True)
        total = sum(g.pow(2).sum() for g in grads if g is not None and g.requires_grad)
        if isinstance(total, Tensor):
            _backward_to_leaves(total)
    except RuntimeError:
        return True
    return False


def _fast_path_note(owner: Mapping[Any, str], modules: Mapping[str, nn.Module], fast: bool) -> str:
    """Which convolutions and activations ran as the fast path's twins, which ran plain."""
    if not fast:
        return "fast=False: the penalty ran as plain autograd throughout"
    twins: dict[str, set[str]] = {}
    plain: dict[str, set[str]] = {}
    for node, path in owner.items():
        kind = type(node).__name__
        twin = fastpath.twin_kind(node)
        if twin is not None:
            twins.setdefault(path, set()).add(twin)
        elif kind == _PLAIN_CONVOLUTION:
            plain.setdefault(path, set()).add("conv" + _why_plain(modules[path]))
        elif kind in _PLAIN_ACTIVATIONS:
            plain.setdefault(path, set()).add(
                _PLAIN_ACTIVATIONS[kind] + " (in place; the twin takes out-of-place calls)"
            )

    def listed(found: dict[str, set[str]]) -> str:
        return "; ".join(
            f"{_name(path, modules)}: {', '.join(sorted(kinds))}"
            for path, kinds in sorted(found.items())
        )

    note = "fast path: " + (f"exact twins ran for {listed(twins)}" if twins else "no twin ran")
    if plain:
        note += f"; ran plain: {listed(plain)}"
    return note + "; every other operation ran as plain autograd (exact, no shortcut)"


def _why_plain(module: nn.Module) -> str:
    """Why a convolution module did not get the twin, where its attributes tell."""
    if isinstance(getattr(module, "padding", None), str):
        return f" (padding={module.padding!r})"
    if parametrize.is_parametrized(module, "weight") or hasattr(module, "weight_orig"):
        return " (its weight is computed, e.g. by spectral norm)"
    return ""
