"""The input gradient a penalty is taken of: ``d critic(x).sum() / dx``, kept differentiable.

Because each score depends only on its own sample, row ``i`` of that gradient is the gradient
of score ``i``, unless a layer mixes samples (batch norm with batch statistics), which
:func:`check_no_batchnorm` refuses. The critic runs through :mod:`gradpen.fastpath` unless
``fast=False``; a ``torch.compile``-d critic through its eager original (aot_autograd has no
double backward).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradpen import fastpath, outputs
from gradpen.outputs import Critic

__all__ = [
    "NoDoubleBackward",
    "check_no_batchnorm",
    "gradient_of_scores",
    "input_gradient",
    "penalty_forward",
]


def check_batch(x: Tensor, what: str) -> None:
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(
            f"{what} must have a non-empty batch dimension, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")


def uses_batch_statistics(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (
        module.training or not module.track_running_stats
    )


def check_no_batchnorm(critic: Critic) -> None:
    """Raise ValueError if ``critic`` has a batch norm layer that uses batch statistics."""
    if not isinstance(critic, nn.Module):
        return
    for name, module in critic.named_modules():
        if uses_batch_statistics(module):
            raise ValueError(
                f"the critic's layer {name or type(critic).__name__!r} is {type(module).__name__} "
                "using batch statistics: the critic then maps a batch to a batch, so the gradient "
                "of one sample's score is not the per-sample gradient the penalty assumes. Use "
                "layer norm (nn.LayerNorm / nn.GroupNorm(1, C)), instance norm or no "
                "normalization in the critic, or pass allow_batchnorm=True to override."
            )


# --- the input gradient -------------------------------------------------------------------------


def eager_original(critic: Critic) -> Critic:
    """The eager module behind a ``torch.compile``-d one (same parameters).

    aot_autograd cannot run the double backward a penalty needs, so the penalty's own forward
    runs eagerly; the loss's forward may stay compiled.
    """
    original = getattr(critic, "_orig_mod", None)
    return original if isinstance(original, nn.Module) else critic


_COMPILED_NODE = "CompiledFunctionBackward"


def graph_nodes(tensor: Tensor) -> Iterator[Any]:
    """Every autograd node of ``tensor``'s graph, each once (depth first from its grad_fn)."""
    seen: set[Any] = set()
    stack = [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(next_node for next_node, _ in node.next_functions)


def _eager_graph_nodes(scores: Tensor) -> list[Any]:
    """The nodes of ``scores``' graph; refuses a graph that went through torch.compile."""
    nodes = list(graph_nodes(scores))
    if any(type(node).__name__.startswith(_COMPILED_NODE) for node in nodes):
        raise ValueError(
            "the scores come from a torch.compile-d forward: PyTorch's aot_autograd does "
            "not support the double backward a gradient penalty needs. Compute the penalty "
            "from an eager forward (pass the critic without real_scores/fake_scores; "
            "gradpen runs a compiled module's eager original) or use "
            "gradpen.compiled.CompiledCriticStep"
        )
    return nodes


class _Verdict(NamedTuple):
    """What a first penalty call through the twins showed about a critic (see
    :func:`judge_twins`): whether the twins pay off on it, and whether the loss's backward can
    reuse the input-gradient pass of a reused forward (only where the penalty's double backward
    stays off the forward graph)."""

    twins: bool
    input_grad_reuse: bool


# Per critic, its verdict. A critic that is garbage-collected leaves; one that cannot be weakly
# referenced always gets the twins.
_VERDICTS: weakref.WeakKeyDictionary[Any, _Verdict] = weakref.WeakKeyDictionary()
_UNJUDGED = _Verdict(twins=True, input_grad_reuse=True)


def _verdict(critic: Critic | None) -> _Verdict:
    try:
        return _VERDICTS.get(critic, _UNJUDGED)
    except TypeError:  # not weakly referenceable (None included)
        return _UNJUDGED


def twins_pay(critic: Critic | None) -> bool:
    """Whether the fast path's twins are used for ``critic``'s penalty forward.

    True until a first penalty call through the twins has shown that they cannot pay off on
    this critic (see :func:`judge_twins`); from then on its penalty forward runs as plain
    autograd, exactly as with ``fast=False``.
    """
    return _verdict(critic).twins


def input_grad_reuse_pays(critic: Critic | None) -> bool:
    """Whether a reused forward of ``critic`` keeps its input-gradient pass for the loss's
    backward (:func:`gradpen.fastpath.input_only_pass`): True until a first penalty call has
    shown that the penalty's double backward reaches the critic's forward graph (a group norm),
    where the loss's signal is no multiple of the pass's and the kept pass only costs."""
    return _verdict(critic).input_grad_reuse


def _input_path(scores: Tensor, x: Tensor) -> set[Any]:
    """The nodes of ``scores``' graph on a path from ``x`` (``x``'s own node excluded)."""

    source = x.grad_fn

    def is_source(node: Any) -> bool:  # x's node: its grad_fn, or a leaf's grad accumulator
        return node is source if source is not None else getattr(node, "variable", None) is x

    reaches: dict[Any, bool] = {}
    stack: list[tuple[Any, bool]] = [(scores.grad_fn, False)]
    while stack:  # iterative post-order: a node reaches x if one of its inputs does
        node, expanded = stack.pop()
        if node is None or (node in reaches and not expanded):
            continue
        inputs = [next_node for next_node, _ in node.next_functions if next_node is not None]
        if expanded:
            reaches[node] = is_source(node) or any(reaches.get(n, False) for n in inputs)
        else:
            reaches.setdefault(node, False)
            stack.append((node, True))
            stack.extend((next_node, False) for next_node in inputs if next_node not in reaches)
    return {node for node, on_path in reaches.items() if on_path and not is_source(node)}


def judge_twins(
    critic: Critic | None, scores: Tensor, x: Tensor, grad: Tensor, *, surely_twinned: bool = True
) -> None:
    """Record, once per critic, whether the twins pay off on it, and whether a reused forward's
    input-gradient pass can serve the loss's backward (:func:`input_grad_reuse_pays`).

    The twins save their cost in the double backward: a ReLU's mask and a convolution's input
    gradient do not depend on the activations, so the input gradient's graph holds cheap nodes
    and, on a critic made of such layers, never reaches back into the forward graph. A group
    norm's input gradient does depend on its input, and its twin reaches back on purpose, through
    one fused node (:class:`gradpen.fastpath._GroupNormInputGrad`) where PyTorch has some thirty.
    Where another operation (a smooth activation, attention, a layer norm) makes the input
    gradient depend on the activations, the double backward walks the forward graph through
    PyTorch's own nodes regardless, and the twins only add their overhead
    (``benchmarks/fast_path_parts.py`` measures both). Such a critic is recorded, and
    :func:`twins_pay` then sends it through plain autograd.

    Args:
        critic: the critic whose penalty forward ran through the twins.
        scores: its per-sample scores, shape ``(B,)``.
        x: the input the scores were computed from.
        grad: the input gradient of ``scores`` (with its graph).
        surely_twinned: whether the forward surely ran under the twins. A forward the caller
            ran (forward reuse) may have run without :func:`penalty_forward`: it is judged
            only if its graph holds a twin, since a plain forward says nothing about them.
    """
    try:
        weakref.ref(critic)
    except TypeError:  # None, or a critic that cannot be weakly referenced: never recorded
        return
    if critic in _VERDICTS:
        return
    forward = _input_path(scores, x)
    if not surely_twinned and not any(fastpath.twin_kind(node) for node in forward):
        return
    # the input gradient's nodes with an edge into the forward graph
    entries = [
        node
        for node in graph_nodes(grad)
        if node not in forward and any(next_node in forward for next_node, _ in node.next_functions)
    ]
    _VERDICTS[critic] = _Verdict(
        twins=all(fastpath.reaches_forward_on_purpose(node) for node in entries),
        input_grad_reuse=not entries,
    )


@contextlib.contextmanager
def penalty_forward(fast: bool = True, *, critic: Critic | None = None) -> Iterator[None]:
    """Context for a critic forward whose scores a penalty will differentiate.

    Inside it:

    - attention (``F.scaled_dot_product_attention``) runs on PyTorch's math kernel: the flash
      and memory-efficient kernels, which PyTorch picks by default on CPU and GPU, have no
      double backward, and the math kernel computes the same attention;
    - on CUDA, a ``critic`` with recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) runs
      them with cuDNN disabled (cuDNN's RNN has no double backward);
    - with ``fast=True``, ReLU / leaky ReLU, convolutions, group norm and average pooling run
      as the exact twins of :mod:`gradpen.fastpath` (cheaper double backward, same values and
      gradients), unless a ``critic`` is given that an earlier penalty found them not to pay
      off on (a critic whose input gradient depends on its activations through an op without a
      twin, e.g. a layer norm or attention: see :func:`twins_pay`).

    The penalties use it for their own forward. Use it around the loss's forward on ``real``
    when its scores feed ``r1(..., scores=)``, and then ``loss.backward(inputs=params)``: the
    twins skip the gradient into ``real`` that a plain ``backward()`` would compute. Only the
    batch the penalty differentiates needs it.

    Args:
        fast: use the fast path's twins.
        critic: the critic, to find recurrent layers (optional).

    Yields:
        Nothing; the forward runs inside the block.
    """
    # cuDNN exists only with CUDA: on a CPU-only build the critic's modules are not walked
    recurrent = (
        torch.backends.cudnn.is_available()
        and isinstance(critic, nn.Module)
        and any(isinstance(m, nn.RNNBase) for m in critic.modules())
    )
    without_cudnn = torch.backends.cudnn.flags(enabled=False) if recurrent else None
    with (
        sdpa_kernel(SDPBackend.MATH),
        without_cudnn or contextlib.nullcontext(),
        fastpath.twins(fast and twins_pay(critic)),
    ):
        yield


# Autograd's placeholders for a backward that cannot be differentiated: a custom Function marked
# @once_differentiable ("Error") and an op without a double-backward formula ("NotImplemented").
_UNDIFFERENTIABLE_NODES = ("Error", "NotImplemented")


class NoDoubleBackward(ValueError):
    """The critic has an operation whose backward cannot be differentiated (no exact penalty)."""


def _refuse_undifferentiable(grad: Tensor) -> None:
    """Raise if the input gradient's graph holds a backward that cannot be differentiated.

    Such a node raises only if the double backward reaches it, and a backward limited to the
    parameters (``loss.backward(inputs=params)``) can skip it: the penalty's gradient through
    that operation would then be silently dropped. Refusing here makes it an error always.
    """
    if any(type(node).__name__ in _UNDIFFERENTIABLE_NODES for node in graph_nodes(grad)):
        raise NoDoubleBackward(
            "the critic contains an operation whose backward cannot itself be "
            "differentiated (a custom autograd.Function marked @once_differentiable, or an "
            "op without a double-backward formula): the exact penalty cannot be computed "
            "through it, and a backward limited to the parameters would silently drop its "
            "part of the penalty's gradient. Use an approximate penalty ('approx-r1', "
            "'approx-r2', 'approx-wgan-gp'), and gp.diagnose(critic, x) to find the module"
        )


def _check_cond(cond: Any, batch: int) -> None:
    if isinstance(cond, Tensor) and (cond.dim() == 0 or cond.shape[0] != batch):
        raise ValueError(
            f"cond must have the batch size {batch} as its first dim, got shape {tuple(cond.shape)}"
        )


def gradient_of_scores(
    scores: Tensor, x: Tensor, *, scaler: Any = None, fast: bool = True
) -> Tensor:
    """Gradient of ``scores.sum()`` with respect to ``x``, keeping the graph for a backward.

    The training loop uses this to reuse the loss's own forward pass for R1 on reals and R2 on
    fakes. On a step where a float16 scaled gradient overflows the result is inf/nan; the
    caller's scaled backward then yields non-finite gradients and ``scaler.step`` skips the step.

    Args:
        scores: ``(B,)`` scores computed from ``x``.
        x: the input, shape ``(B, ...)``, that produced ``scores`` (it must require grad).
        scaler: an enabled ``torch.amp.GradScaler``: the sum is multiplied by the scale before
            ``autograd.grad`` and the gradient divided by it out of place, so float16 gradients
            do not underflow.
        fast: take the input gradient through :mod:`gradpen.fastpath` (exact, cheaper).

    Returns:
        The gradient, shape of ``x``, with ``create_graph=True``.
    """
    return _gradient_of_scores(scores, x, scaler, fast, reused_forward=True)


def _gradient_of_scores(
    scores: Tensor, x: Tensor, scaler: Any, fast: bool, *, reused_forward: bool
) -> Tensor:
    """:func:`gradient_of_scores`; ``reused_forward``: the scores are also the training loss's
    (see :func:`gradpen.fastpath.input_only_pass`)."""
    if not x.requires_grad:
        raise ValueError("x must require grad and be the input that produced the scores")
    if not scores.requires_grad:
        raise ValueError(
            "the critic's output does not depend on its input x (the output does not require "
            "grad), so there is no input gradient to penalize"
        )
    nodes = _eager_graph_nodes(scores)
    total = scores.sum()
    scaled = scaler is not None and scaler.is_enabled()
    if scaled:
        total = scaler.scale(total)

    def plain() -> Tensor | None:
        return torch.autograd.grad(total, x, create_graph=True, allow_unused=True)[0]

    def input_only() -> Tensor | None:
        with fastpath.input_only_pass(nodes, reused_forward=reused_forward):
            return plain()

    grad = fastpath.fast_or_plain(input_only, plain, "the input gradient") if fast else plain()
    if grad is None:
        raise ValueError(
            "the critic's output does not depend on its input x, so there is no input gradient "
            "to penalize; check that the critic uses x (and not only cond)"
        )
    _refuse_undifferentiable(grad)
    return grad * (1.0 / scaler.get_scale()) if scaled else grad


def input_gradient(
    critic: Critic,
    x: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    scaler: Any = None,
    fast: bool = True,
    reduce: str = "sum",
) -> Tensor:
    """``d critic(x[, cond]).sum() / dx`` with ``create_graph=True``.

    Because each score depends only on its own sample, row ``i`` of the result is the gradient
    of score ``i``. The caller's tensor is not modified: the gradient is taken with respect to
    a detached copy, and ``cond`` is passed unchanged (the gradient is with respect to data only).
    A ``torch.compile``-d module is run through its eager original (same parameters). With
    ``fast=True`` a purely piecewise-linear critic's gradient has no graph back to ``x`` (its
    derivative in ``x`` is zero anyway); values and parameter gradients are exact.

    Args:
        critic: a callable returning ``(B,)``, ``(B, 1)``, ``(B, ...)`` (e.g. a patch map) or a
            list, tuple or dict of such outputs (see :mod:`gradpen.outputs`).
        x: the points, shape ``(B, ...)``, floating point.
        cond: the condition (e.g. labels, ``(B,)``), passed as ``critic(x, cond)`` if not None.
        allow_batchnorm: allow batch norm layers that use batch statistics (they mix samples).
        scaler: an enabled ``torch.amp.GradScaler`` for float16; see :func:`gradient_of_scores`.
        fast: run the forward and input gradient through :mod:`gradpen.fastpath`.
        reduce: ``"sum"`` (default) or ``"mean"`` over each output's non-batch elements: the
            per-sample score whose gradient is taken (see :func:`gradpen.outputs.scores`).

    Returns:
        The input gradient, shape of ``x``.
    """
    check_batch(x, "x")
    _check_cond(cond, x.shape[0])
    outputs.check_reduce(reduce)
    critic = eager_original(critic)
    if not allow_batchnorm:
        check_no_batchnorm(critic)
    x = x.detach().requires_grad_(True)
    with penalty_forward(fast, critic=critic):
        scores = outputs.critic_scores(critic, x, cond, reduce)
    grad = _gradient_of_scores(scores, x, scaler, fast, reused_forward=False)
    if fast:
        judge_twins(critic, scores, x, grad)
    return grad
