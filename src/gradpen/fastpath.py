"""The fast path: exact autograd twins that make a gradient penalty's double backward cheaper.

A gradient penalty differentiates the critic twice: ``autograd.grad(scores, x,
create_graph=True)`` builds the input gradient as a graph, and the training backward then
differentiates that graph with respect to the parameters. Plain autograd does more work there
than the mathematics needs, and this module removes five such costs, without approximation:

- ReLU / leaky ReLU (:class:`_PiecewiseLinear`). Their derivative is a 0/1 (or 0/slope) mask
  whose own derivative is zero almost everywhere. PyTorch's backward still records how the mask
  depends on the input, so the double backward pushes those exact zeros back through the whole
  forward graph. The twin's backward treats the mask as a constant: the same values, the same
  gradients, and the double backward stops at the backward graph.
- Convolutions (:class:`_Convolution`). PyTorch's double backward of a convolution computes the
  weight gradient of the input-gradient node as a forward convolution with batch and channels
  swapped, which oneDNN and cuDNN run slowly. The twin's input gradient is a node whose backward
  calls ``convolution_backward``'s weight gradient instead (the same quantity), and on CPU a
  first layer with 1-3 input channels takes its input gradient as a matmul and ``fold``
  (with many filters or few output positions, where that beats oneDNN's).
- With forward reuse (R1 / R2 on the loss's own forward), the training loss's backward through
  an inner convolution needs an input gradient that the penalty's input-gradient pass already
  computed, up to a per-sample factor (the pass sends back 1 per score, the loss ``dL/dD``).
  The twin takes it from there instead of computing it again, after checking that the factor
  explains the loss's signal (:func:`_loss_signal_scale`). The same factor makes the loss's
  weight gradient and the penalty's one kernel instead of two (:func:`_leave_weight_grad_to_loss`).
- Group norm (:class:`_GroupNorm`). Its input gradient depends on its input, so its second
  derivative must reach back into the forward graph; PyTorch differentiates its group-norm
  backward as a composite of some thirty small operations. The twin's input gradient is one
  node whose backward computes the same derivatives from a handful of whole-tensor passes
  (:class:`_GroupNormInputGrad`).
- Average pooling (:class:`_AveragePool`). Its input gradient is linear in the signal and does
  not depend on the input, yet PyTorch's node records the input's (zero) derivative, so the
  double backward pushes zeros back through the forward graph. The twin's input-gradient node
  has no such edge; and on CPU, pooling over disjoint windows (the 2x2 downsampling of ResNet
  critics) runs as strided slices, several times faster than PyTorch's channels-first kernel,
  with the same values bit for bit.

All are exact: their forward and first derivative give PyTorch's values (PyTorch's own kernels,
or the same sums in the same order; a reused input gradient is one, times the factor, and a
fused weight gradient takes the loss's signal as that multiple, both used only where the factor
explains the loss's signal to within 64 roundings), and their second
derivative is the true one (``tests/test_penalty_forward.py`` and
``tests/test_norm_pool_twins.py`` compare values, input gradients and parameter gradients with
plain autograd in float64, with gradcheck and gradgradcheck).

How it is switched: every penalty takes ``fast=True`` (PyTorch's ``foreach=`` convention);
``fast=False`` runs plain autograd. Inside :func:`twins` a ``TorchFunctionMode`` routes
out-of-place ReLU / leaky ReLU, ``conv1d/2d/3d`` with parameter weights and at least
:data:`SMALL_CONV_MACS` multiply-accumulates, ``group_norm`` and ``avg_pool2d/3d`` to the
twins; every other op runs unchanged, so an unknown op is never a problem. A smaller
convolution runs as PyTorch's own, which is as exact: its twin's Python dispatch would cost
more than its kernels save. If a twin fails on a call it does
not handle, the call runs as plain PyTorch instead, with a warning (never an error of its own).
A twin whose output gets no gradient (PyTorch's own double backward of a convolution with a
computed weight sends none into the forward graph) passes none on: PyTorch would hand a custom
Function zeros, and its backward would compute with them.
Given the critic, :func:`gradpen.penalty_forward` leaves the twins out for a critic on which a
first penalty call showed that they cannot pay off (:func:`gradpen.gradients.judge_twins`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = [
    "FEW_CHANNELS",
    "FOLD_COLUMNS",
    "FOLD_FILTERS",
    "SMALL_CONV_MACS",
    "fast_or_plain",
    "input_only_pass",
    "reaches_forward_on_purpose",
    "twin_kind",
    "twins",
]


class _PiecewiseLinear(torch.autograd.Function):
    """Leaky ReLU (ReLU for slope 0) whose backward uses the input only through its sign.

    Forward and first derivative are bit-identical to PyTorch's; the backward detaches the
    saved tensor, so a double backward does not propagate the (exactly zero) second derivative
    back through the forward graph. For a slope >= 0 the output has the input's sign, so the
    output is saved instead of the input (as PyTorch's ReLU and in-place leaky ReLU do): the next
    layer keeps the output anyway, and the input can be freed. The price: an in-place change of
    a leaky ReLU's output inside the context raises in the backward (never a wrong gradient).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, slope: float) -> Tensor:
        out = F.relu(x) if slope == 0 else F.leaky_relu(x, slope)
        ctx.set_materialize_grads(False)
        ctx.from_output = slope >= 0
        ctx.save_for_backward(out if ctx.from_output else x)
        ctx.slope = slope
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None]:
        if grad is None:  # no gradient reached the output: none for the input either
            return None, None
        try:
            (saved,) = ctx.saved_tensors
        except RuntimeError as error:
            if "inplace operation" not in str(error):
                raise
            raise RuntimeError(
                "an activation's output was modified in place after gradpen's penalty_forward "
                "saved it (its ReLU / leaky ReLU twin keeps the output, not the input); write "
                "that change out of place, e.g. h = h * gain instead of h.mul_(gain)"
            ) from error
        backward = torch.ops.aten.leaky_relu_backward
        return backward(grad, saved.detach(), ctx.slope, ctx.from_output), None


_RELUS = (F.relu, torch.relu, Tensor.relu)
_CONVOLUTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
FEW_CHANNELS = 3
# The fold input gradient of a few-channel convolution, where it pays (:meth:`_ConvGeometry.
# _folds_input_grad`): with at least this many filters, or at most this many columns per sample.
FOLD_FILTERS = 64
FOLD_COLUMNS = 2**15
# A convolution call with fewer multiply-accumulates than this runs as PyTorch's own: there the
# twin's Python dispatch (its forward, backward and double backward node) costs more than its
# kernels save (``benchmarks/fast_path_sizes.py``: on CPU the twins lose below a few million).
# 0 twins every convolution.
SMALL_CONV_MACS = 4_000_000
_CONV_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


@dataclass(frozen=True)
class _ConvGeometry:
    """Stride, padding, dilation and groups of one N-d convolution call."""

    dims: int
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def multiply_accumulates(self, x: Tensor, weight: Tensor) -> int:
        """The multiply-accumulates of the convolution of ``x`` ``(B, C, *S)`` with ``weight``
        ``(C_out, C / groups, *K)``: ``B * C_out * prod(output size) * (C / groups) * prod(K)``."""
        output_size = (
            (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
            for size, pad, dilation, kernel, stride in zip(
                x.shape[2:], self.padding, self.dilation, weight.shape[2:], self.stride, strict=True
            )
        )
        return x.shape[0] * math.prod(output_size) * weight.numel()

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def backward(
        self, grad: Tensor, x: Tensor, weight: Tensor, mask: tuple[bool, bool, bool]
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The input, weight and bias gradients selected by ``mask`` (differentiable)."""
        grad_x = grad_bias = None
        if mask[0] and self._folds_input_grad(weight, grad):
            grad_x, mask = self._input_grad_by_fold(grad, x, weight), (False, *mask[1:])
        if mask[2] and not mask[1]:  # oneDNN would compute the weight's too, at its full cost
            grad_bias, mask = grad.sum((0, *range(2, grad.dim()))), (*mask[:2], False)
        if not any(mask):
            return grad_x, None, grad_bias
        grads = torch.ops.aten.convolution_backward(
            grad,
            x,
            weight,
            [weight.shape[0]] if mask[2] else None,
            self.stride,
            self.padding,
            self.dilation,
            False,
            [0] * self.dims,
            self.groups,
            list(mask),
        )
        return (
            grads[0] if grad_x is None else grad_x,
            grads[1],
            grads[2] if grad_bias is None else grad_bias,
        )

    def weight_grad(self, grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        """The weight gradient for the signal ``grad`` at the output and the input ``x``."""
        return self.backward(grad, x, weight, (False, True, False))[1]

    def _folds_input_grad(self, weight: Tensor, grad: Tensor) -> bool:
        """Whether the input gradient is a matmul and ``fold`` (:meth:`_input_grad_by_fold`).

        On CPU, for a 2-D convolution from 1-3 channels (an image critic's first layer) with at
        least :data:`FOLD_FILTERS` filters or at most :data:`FOLD_COLUMNS` columns per sample
        (input channels x kernel x output positions): oneDNN's input gradient grows with the
        filters, fold's scatter with the columns. There it ran about as fast as oneDNN's to
        5x faster (the DCGAN critics' first layers, the ResNet critic's, a multi-scale critic's
        4 filters on 32 px); with 4-8 filters on 64 px (49152 columns: the zoo's PatchGAN and
        multi-scale first layers) slower, and from 8 input channels on slower too
        (``benchmarks/conv_kernels.py``, torch 2.13, 1 and 2 threads).

        Args:
            weight: the convolution's weight, ``(C_out, C_in, kh, kw)``.
            grad: the signal at its output, ``(B, C_out, H_out, W_out)``.
        """
        return (
            weight.device.type == "cpu"
            and self.dims == 2
            and self.groups == 1
            and weight.shape[1] <= FEW_CHANNELS
            and (
                weight.shape[0] >= FOLD_FILTERS
                or math.prod(weight.shape[1:]) * math.prod(grad.shape[2:]) <= FOLD_COLUMNS
            )
        )

    def _input_grad_by_fold(self, grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        """``conv^T(grad, weight)`` as ``fold(weight^T @ grad)``: unfold's adjoint.

        A batched matmul against the broadcast weight: ``matmul`` would copy ``grad`` to a
        transposed layout first.
        """
        batch = grad.shape[0]
        columns = torch.bmm(weight.flatten(1).t().expand(batch, -1, -1), grad.flatten(2))
        return F.fold(
            columns,
            x.shape[2:],
            weight.shape[2:],
            dilation=self.dilation,
            padding=self.padding,
            stride=self.stride,
        )


class _ConvolutionInputGrad(torch.autograd.Function):
    """The input gradient of a convolution, ``conv^T(grad, weight)``, with a cheap backward.

    PyTorch's own double backward of a convolution computes the weight gradient as a forward
    convolution with batch and channels swapped; here it is ``convolution_backward``'s weight
    gradient, which oneDNN / cuDNN run faster. ``shape_of`` only carries the input's shape.
    ``forward_node``: the :class:`_Convolution` node whose input-only pass this is, where that
    pass is kept for the loss's backward (forward reuse); the weight gradient may then be left
    to that node (:func:`_leave_weight_grad_to_loss`).
    """

    @staticmethod
    def forward(
        ctx: Any,
        grad: Tensor,
        shape_of: Tensor,
        weight: Tensor,
        geometry: _ConvGeometry,
        forward_node: Any,
    ) -> Tensor:
        ctx.save_for_backward(grad, weight)
        ctx.geometry = geometry
        ctx.forward_node = forward_node
        return geometry.backward(grad, shape_of, weight, (True, False, False))[0]

    @staticmethod
    def backward(
        ctx: Any, upstream: Tensor
    ) -> tuple[Tensor | None, None, Tensor | None, None, None]:
        grad, weight = ctx.saved_tensors
        geometry: _ConvGeometry = ctx.geometry
        grad_of_grad = geometry.forward(upstream, weight, None) if ctx.needs_input_grad[0] else None
        grad_of_weight = None
        if ctx.needs_input_grad[2] and not _leave_weight_grad_to_loss(ctx.forward_node, upstream):
            grad_of_weight = geometry.weight_grad(grad, upstream, weight)
        return grad_of_grad, None, grad_of_weight, None, None


# PyTorch's (private) query whether the running backward executes a node; None where absent.
_WILL_ENGINE_EXECUTE = getattr(torch._C, "_will_engine_execute_node", None)


def _engine_uses(node: Any) -> bool:
    """Whether the running backward will use the gradient flowing into ``node``.

    ``needs_input_grad`` is fixed at forward time; ``loss.backward(inputs=params)`` then prunes
    the gradient into a batch that requires grad only because a penalty differentiated it
    (forward reuse), and with this check the convolution skips computing it. Under
    ``autograd.grad`` PyTorch cannot answer for a leaf, and a PyTorch without the (private)
    query cannot answer at all: then the gradient is computed.
    """
    return _engine_executes(node, unknown=True)


def _engine_executes(node: Any, *, unknown: bool) -> bool:
    """Whether the running backward executes ``node``; ``unknown`` where PyTorch cannot tell."""
    if _WILL_ENGINE_EXECUTE is None:
        return unknown
    try:
        return _WILL_ENGINE_EXECUTE(node)
    except RuntimeError:
        return unknown


def _leave_weight_grad_to_loss(forward_node: Any, upstream: Tensor) -> bool:
    """Leave the penalty's weight gradient at a convolution to the loss's backward through the
    same forward node, which then computes both in one kernel; True where it was left.

    With forward reuse (R1 on the loss's own forward) one backward differentiates both the
    loss and the penalty. At a convolution the penalty's weight gradient is
    ``sum_b corr(g_b, u_b)`` (``g`` the input-only pass's signal at the output, ``u`` this
    node's upstream at the input) and the loss's ``sum_b corr(s_b, x_b)`` (``s`` its signal, ``x``
    the forward's input). Where ``s_b = c_b g_b`` (the check of :func:`_loss_signal_scale`) the
    two are one weight gradient, ``sum_b corr(g_b, c_b x_b + u_b)``: one kernel instead of two.
    The penalty's node runs first (its nodes are newer: PyTorch's engine runs the newest ready
    node first), so it leaves ``u`` on the forward node's kept pass, and only where that node
    surely runs later in this backward and has not run yet; the forward node adds the penalty's
    part in any case, fused or not (:meth:`_Convolution.backward`). Never in a backward that
    builds a graph, nor where the pass was not kept.
    """
    earlier = getattr(forward_node, "input_only_pass", None)
    if (
        earlier is None
        or earlier.upstream is not None
        or torch.is_grad_enabled()
        or not _reusable(upstream)
        or not _engine_executes(forward_node, unknown=False)
    ):
        return False
    earlier.upstream = upstream.detach()
    return True


class _Convolution(torch.autograd.Function):
    """A convolution (parameters as leaves) whose backward knows the input-only pass.

    While :func:`gradient_of_scores` takes the input gradient it sets ``input_only`` on these
    nodes: the backward then returns just the input gradient, as a
    :class:`_ConvolutionInputGrad` (the weights get no gradient in that pass, which asks for the
    input's only). Any other backward gets PyTorch's own gradients, except that with forward
    reuse (``keeps_pass``) the loss's backward draws on the pass where the loss's signal is a
    per-sample multiple of the pass's (:func:`_loss_signal_scale`): the input gradient is that
    multiple of the pass's, and the weight gradient also holds the penalty's part, which the
    penalty's backward left here (:func:`_leave_weight_grad_to_loss`), in one kernel.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, geometry: _ConvGeometry
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.set_materialize_grads(False)
        ctx.geometry = geometry
        ctx.input_only = ctx.keeps_pass = False
        ctx.input_only_pass = None
        return geometry.forward(x, weight, bias)

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        if ctx.input_only:
            return _Convolution._input_only(ctx, grad)
        earlier, ctx.input_only_pass = ctx.input_only_pass, None
        upstream = None if earlier is None else earlier.upstream  # the penalty's, left here
        if grad is None and upstream is None:
            return None, None, None, None
        x, weight = ctx.saved_tensors
        geometry: _ConvGeometry = ctx.geometry
        if grad is None:  # only the penalty's weight gradient reaches this node
            return None, geometry.weight_grad(earlier.signal, upstream, weight), None, None
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        needs_x = needs_x and _engine_uses(ctx.next_functions[0][0])
        may_reuse_x = needs_x and earlier is not None and earlier.input_grad is not None
        scale = _loss_signal_scale(grad, earlier) if may_reuse_x or upstream is not None else None
        reuses_x = may_reuse_x and scale is not None
        fuses_weight = upstream is not None and scale is not None
        mask = (needs_x and not reuses_x, needs_weight and not fuses_weight, needs_bias)
        grad_x, grad_weight, grad_bias = geometry.backward(grad, x, weight, mask)
        per_sample = None if scale is None else scale.view(-1, *[1] * (x.dim() - 1))
        if reuses_x:
            grad_x = earlier.input_grad * per_sample
        if fuses_weight:  # sum_b corr(g_b, c_b x_b + u_b): the loss's and the penalty's
            combined = torch.addcmul(upstream, x, per_sample)
            grad_weight = geometry.weight_grad(earlier.signal, combined, weight)
        elif upstream is not None:
            grad_weight = grad_weight + geometry.weight_grad(earlier.signal, upstream, weight)
        return grad_x, grad_weight, grad_bias, None

    @staticmethod
    def _input_only(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None, None, None]:
        """The input-only pass's backward: the input gradient as a :class:`_ConvolutionInputGrad`,
        and with forward reuse the pass kept for the loss's backward."""
        if grad is None or not ctx.needs_input_grad[0]:
            return None, None, None, None
        x, weight = ctx.saved_tensors
        keeps = ctx.keeps_pass and (x.grad_fn is not None or ctx.needs_input_grad[1])
        grad_x = _ConvolutionInputGrad.apply(
            grad, x.detach(), weight, ctx.geometry, ctx if keeps else None
        )
        if keeps:  # a later backward may reuse the input gradient (not a leaf's) or the signal
            ctx.input_only_pass = _InputOnlyPass.keep(
                grad, grad_x if x.grad_fn is not None else None
            )
        return grad_x, None, None, None


# How far (relative, per sample) a backward signal may be from a multiple of the input-only
# pass's and still count as that multiple: a few dozen roundings.
_PROPORTIONAL_ULPS = 64


def _reusable(t: Tensor) -> bool:
    """Whether a pass at ``t``'s device and dtype may be reused: CPU float32 / 64."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


@dataclass
class _InputOnlyPass:
    """What the input-only pass sent into a convolution and what it got out, and their versions.

    ``input_grad = conv^T(signal, weight)``, None where the convolution's input is a leaf (no
    later backward needs it). The versions are PyTorch's in-place counters at the time of the
    pass: a tensor changed in place since (a hook, a caller editing the returned input
    gradient) is not reused. ``upstream``: the penalty's signal at the convolution's input, where
    the penalty's backward left its weight gradient to the loss's
    (:func:`_leave_weight_grad_to_loss`).
    """

    signal: Tensor
    input_grad: Tensor | None
    versions: tuple[int, ...]
    upstream: Tensor | None = None

    @classmethod
    def keep(cls, signal: Tensor, input_grad: Tensor | None) -> _InputOnlyPass | None:
        """The pass to keep for a later backward; None where it could never be reused."""
        if not _reusable(signal):
            return None
        signal = signal.detach()
        input_grad = None if input_grad is None else input_grad.detach()
        return cls(signal, input_grad, _versions(signal, input_grad))

    def unchanged(self) -> bool:
        return _versions(self.signal, self.input_grad) == self.versions


def _versions(*tensors: Tensor | None) -> tuple[int, ...]:
    """PyTorch's in-place counters of the tensors given (None skipped)."""
    return tuple(t._version for t in tensors if t is not None)


def _loss_signal_scale(grad: Tensor, earlier: _InputOnlyPass) -> Tensor | None:
    """The per-sample factor ``c`` ``(B,)`` with ``grad = c * earlier.signal``, or None.

    With forward reuse (R1 on the loss's own forward) the training loss's signal at a
    convolution is, per sample, a multiple ``c_b`` of the input-only pass's wherever the
    penalty's double backward does not feed the forward graph: the pass sends ``1`` back from
    each score, the loss sends ``dL/dD_b``, and everything in between is linear in what is sent
    back. Then the input gradient is ``c_b`` times the pass's, and the convolution skips
    computing it again (one of the step's largest kernels); and the loss's weight gradient
    joins the penalty's in one kernel (:func:`_leave_weight_grad_to_loss`). Each sample's
    ``c_b`` is the least-squares fit, on rows scaled to a largest entry of 1 (so that no norm
    overflows or underflows), and it is used only if the rest of the signal is within
    :data:`_PROPORTIONAL_ULPS` roundings of its norm; anything else (a loss on the critic's
    features, a normalization that feeds the penalty back through the forward graph) gets the
    convolution's own gradients. So does a backward that builds a graph
    (``create_graph=True``): the reused gradient is not differentiable in the weight. CPU
    float32 / float64 only: the check reads its verdict on the host, which on a GPU would stall
    the backward.

    Returns:
        ``c``, shape ``(B,)``, or None where the signal is no such multiple.
    """
    if (
        torch.is_grad_enabled()
        or not _reusable(grad)
        or grad.shape != earlier.signal.shape
        or grad.dtype != earlier.signal.dtype
        or not earlier.unchanged()
    ):
        return None
    tiny = torch.finfo(grad.dtype).tiny
    flat, reference = grad.flatten(1), earlier.signal.flatten(1)
    flat_max = flat.abs().amax(1, keepdim=True)
    reference_max = reference.abs().amax(1, keepdim=True).clamp_min(tiny)
    flat, reference = flat / flat_max.clamp_min(tiny), reference / reference_max
    squared = torch.linalg.vecdot(reference, reference)
    fit = torch.linalg.vecdot(flat, reference) / squared.clamp_min(tiny)
    residual = torch.linalg.vector_norm(
        torch.addcmul(flat, fit[:, None], reference, value=-1), dim=1
    )
    allowed = (
        _PROPORTIONAL_ULPS * torch.finfo(flat.dtype).eps * torch.linalg.vector_norm(flat, dim=1)
    )
    scale = fit * (flat_max / reference_max).squeeze(1)
    if not bool(((residual <= allowed) & torch.isfinite(scale)).all()):
        return None
    return scale


class _GroupStatistics(NamedTuple):
    """A group norm's input as ``(N, G, M)`` rows (``G`` groups of ``M`` values), and their mean
    and reciprocal std ``(N, G, 1)``."""

    rows: Tensor
    mean: Tensor
    rstd: Tensor

    @classmethod
    def of(cls, x: Tensor, groups: int, eps: float, mean: Tensor, rstd: Tensor) -> _GroupStatistics:
        """The rows of ``x``; ``mean`` / ``rstd`` ``(N, G)`` as the forward computed them, except in
        a backward that builds a graph, where they are computed again from ``x`` (so that a
        derivative through them is exact too)."""
        rows = x.reshape(x.shape[0], groups, -1)
        if torch.is_grad_enabled():
            mean = rows.mean(-1)
            rstd = torch.rsqrt(rows.var(-1, correction=0) + eps)
        return cls(rows, mean.unsqueeze(-1), rstd.unsqueeze(-1))

    @property
    def normalized(self) -> Tensor:
        """``(x - mean) * rstd``, rows ``(N, G, M)``."""
        return torch.addcmul(-self.mean * self.rstd, self.rows, self.rstd)


def _per_channel(weight: Tensor | None, x: Tensor) -> Tensor | None:
    """``weight`` ``(C,)`` shaped to broadcast against ``x`` ``(N, C, *)``."""
    return None if weight is None else weight.view(1, -1, *[1] * (x.dim() - 2))


def _group_norm_layout(x: Tensor) -> torch.memory_format:
    """The memory format PyTorch's group-norm kernels take ``x`` in: channels-last where ``x``
    is so on CPU (the kernels have a channels-last version there), else contiguous (as
    ``torch.group_norm`` makes a strided input before the kernel, and CUDA's kernel needs)."""
    if x.device.type == "cpu" and not x.is_contiguous():
        for layout, dims in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
            if x.dim() == dims and x.is_contiguous(memory_format=layout):
                return layout
    return torch.contiguous_format


def _native_group_norm_backward(
    grad: Tensor,
    x: Tensor,
    mean: Tensor,
    rstd: Tensor,
    weight: Tensor | None,
    groups: int,
    mask: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """PyTorch's group-norm backward kernel, with ``grad`` and ``x`` in one memory format: the
    kernel reads both in ``x``'s, so a channels-last ``x`` with a contiguous ``grad`` would give
    wrong values (PyTorch's own autograd formula aligns them too)."""
    layout = _group_norm_layout(x)
    grads = torch.ops.aten.native_group_norm_backward(
        grad.contiguous(memory_format=layout),
        x.contiguous(memory_format=layout),
        mean,
        rstd,
        weight,
        x.shape[0],
        x.shape[1],
        math.prod(x.shape[2:]),
        groups,
        list(mask),
    )
    return tuple(t if wanted else None for t, wanted in zip(grads, mask, strict=True))


class _GroupNormInputGrad(torch.autograd.Function):
    """A group norm's input gradient ``dx`` for ``grad``, with one fused node as its backward.

    PyTorch differentiates its group-norm backward as a composite of some thirty small
    operations; this node computes the same three derivatives (in ``grad``, ``x`` and the weight)
    from a handful of whole-tensor passes. With ``g = weight * grad`` per channel, ``xhat`` the
    normalized input, ``r`` the reciprocal std and means over a group's ``m`` elements,
    ``dx = r (g - mean(g) - xhat mean(g xhat))``. For an upstream ``v``:
    ``p = r (v - mean(v) - xhat mean(v xhat))`` is the derivative in ``g`` (so ``weight * p`` in
    ``grad`` and ``sum(grad * p)`` per channel in the weight), and the derivative in ``x`` is
    ``-(r / m) (sum(v dx) xhat + sum(v xhat) dx) - r mean(g xhat) p``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        grad: Tensor,
        x: Tensor,
        weight: Tensor | None,
        mean: Tensor,
        rstd: Tensor,
        groups: int,
        eps: float,
    ) -> Tensor:
        mask = (True, False, False)
        grad_x = _native_group_norm_backward(grad, x, mean, rstd, weight, groups, mask)[0]
        ctx.save_for_backward(grad, x, weight, mean, rstd, grad_x)
        ctx.groups, ctx.eps = groups, eps
        return grad_x

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        grad, x, weight, mean, rstd, grad_x = ctx.saved_tensors
        needs_grad, needs_x, needs_weight = ctx.needs_input_grad[:3]
        stats = _GroupStatistics.of(x, ctx.groups, ctx.eps, mean, rstd)
        if torch.is_grad_enabled():  # a graph of this backward: dx from differentiable parts
            grad_x = _group_norm_input_grad(grad, weight, stats)
        normalized, r = stats.normalized, stats.rstd
        rows = upstream.reshape(normalized.shape)
        per_size = -r / rows.shape[-1]  # (N, G, 1): the small factors are formed once
        v_dot_normalized = torch.linalg.vecdot(rows, normalized).unsqueeze(-1)
        # the derivative in g: r (v - mean(v)) - r xhat mean(v xhat)
        in_g = torch.addcmul(per_size * rows.sum(-1, keepdim=True), rows, r)
        in_g = torch.addcmul(in_g, normalized, per_size * v_dot_normalized)
        in_g_of_x = in_g.reshape(x.shape)
        scale = _per_channel(weight, x)
        grad_of_grad = grad_of_weight = grad_of_x = None
        if needs_grad:
            grad_of_grad = in_g_of_x if scale is None else in_g_of_x * scale
        if needs_weight and weight is not None:
            grad_of_weight = _channel_dots(grad, in_g_of_x).sum(0)
        if needs_x:
            # sum(g xhat) per group, g = weight * grad: per-channel dots, weighted, then summed
            g_dot_normalized = _channel_dots(grad, normalized.reshape(x.shape))
            if weight is not None:
                g_dot_normalized = g_dot_normalized * weight
            g_dot_normalized = g_dot_normalized.view(*normalized.shape[:2], -1).sum(-1, True)
            grad_x_rows = grad_x.reshape(normalized.shape)
            v_dot_grad_x = torch.linalg.vecdot(rows, grad_x_rows).unsqueeze(-1)
            grad_of_x = normalized * (per_size * v_dot_grad_x)
            grad_of_x = torch.addcmul(grad_of_x, grad_x_rows, per_size * v_dot_normalized)
            grad_of_x = torch.addcmul(grad_of_x, in_g, per_size * g_dot_normalized)
            grad_of_x = grad_of_x.reshape(x.shape)
        return grad_of_grad, grad_of_x, grad_of_weight, None, None, None, None


def _channel_dots(a: Tensor, b: Tensor) -> Tensor:
    """``sum(a * b)`` over every dim but the batch and channel ones, ``(N, C)``."""
    return torch.linalg.vecdot(a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1))


def _group_norm_input_grad(grad: Tensor, weight: Tensor | None, stats: _GroupStatistics) -> Tensor:
    """A group norm's input gradient by differentiable operations: for a backward with a graph."""
    scale = _per_channel(weight, grad)
    g = (grad if scale is None else grad * scale).reshape(stats.rows.shape)
    normalized = stats.normalized
    centered = g - g.mean(-1, keepdim=True) - normalized * (g * normalized).mean(-1, keepdim=True)
    return (stats.rstd * centered).reshape(grad.shape)


class _GroupNorm(torch.autograd.Function):
    """``F.group_norm`` whose input gradient, in the input-only pass, is a
    :class:`_GroupNormInputGrad` (one fused node where PyTorch's double backward has some
    thirty). Any other backward gets PyTorch's own (differentiable) gradients."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> Tensor:
        batch, channels = x.shape[:2]
        out, mean, rstd = torch.ops.aten.native_group_norm(
            x.contiguous(memory_format=_group_norm_layout(x)),
            weight,
            bias,
            batch,
            channels,
            math.prod(x.shape[2:]),
            groups,
            eps,
        )
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.set_materialize_grads(False)
        ctx.groups, ctx.eps, ctx.has_bias = groups, eps, bias is not None
        ctx.input_only = False
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, ...]:
        if grad is None:
            return None, None, None, None, None
        x, weight, mean, rstd = ctx.saved_tensors
        needs_x, _, needs_weight, needs_bias = ctx.needs_input_grad[:4]
        needs_weight, needs_bias = needs_weight and weight is not None, needs_bias and ctx.has_bias
        if ctx.input_only or torch.is_grad_enabled():  # the gradients with a graph
            grad_x = (
                _GroupNormInputGrad.apply(grad, x, weight, mean, rstd, ctx.groups, ctx.eps)
                if needs_x
                else None
            )
            if ctx.input_only:
                return grad_x, None, None, None, None
            normalized = _GroupStatistics.of(x, ctx.groups, ctx.eps, mean, rstd).normalized
            grad_weight = (
                _channel_dots(grad, normalized.reshape(x.shape)).sum(0) if needs_weight else None
            )
            grad_bias = grad.sum([0, *range(2, x.dim())]) if needs_bias else None
            return grad_x, None, grad_weight, grad_bias, None
        mask = (needs_x, needs_weight, needs_bias)
        grads = _native_group_norm_backward(grad, x, mean, rstd, weight, ctx.groups, mask)
        return grads[0], None, grads[1], grads[2], None


_GROUP_NORM_ARGUMENTS = ("input", "num_groups", "weight", "bias", "eps")


def _group_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    """``F.group_norm(*args, **kwargs)`` as a :class:`_GroupNorm`, or None where it does not apply.

    It applies to float32 / float64 inputs ``(N, C, *)`` outside autocast, with more than one
    value per group, and a weight and bias that are None or leaves (module parameters) of the
    input's dtype; anything else runs as PyTorch's own (which also raises PyTorch's errors).
    """
    bound = dict(zip(_GROUP_NORM_ARGUMENTS, args, strict=False)) | kwargs
    x, groups = bound.get("input"), bound.get("num_groups")
    weight, bias, eps = bound.get("weight"), bound.get("bias"), bound.get("eps", 1e-5)
    if not (
        set(bound) <= set(_GROUP_NORM_ARGUMENTS)
        and isinstance(x, Tensor)
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() >= 2
        and isinstance(groups, int)
        and groups > 0
        and x.shape[1] % groups == 0
        and x.numel() > 0
        and math.prod(x.shape[1:]) // groups > 1
        and isinstance(eps, (int, float))
        and all(
            t is None or (isinstance(t, Tensor) and t.grad_fn is None and t.dtype == x.dtype)
            for t in (weight, bias)
        )
        and not torch.is_autocast_enabled(x.device.type)
        and torch.is_grad_enabled()
    ):
        return None
    return _GroupNorm.apply(x, groups, weight, bias, float(eps))


_AVERAGE_POOLS = {F.avg_pool2d: 2, F.avg_pool3d: 3}
_POOL_ARGUMENTS = (
    "input",
    "kernel_size",
    "stride",
    "padding",
    "ceil_mode",
    "count_include_pad",
    "divisor_override",
)


@dataclass(frozen=True)
class _PoolGeometry:
    """The arguments of one N-d average pooling call after the input (PyTorch's own forms)."""

    dims: int
    # kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    arguments: tuple[Any, ...]

    def forward(self, x: Tensor) -> Tensor:
        if self._by_slices(x):
            windows = self._windows(x)
            total = windows[0]
            for window in windows[1:]:
                total = total + window
            return total / self._divisor()
        return (F.avg_pool2d, F.avg_pool3d)[self.dims - 2](x, *self.arguments)

    def input_grad(self, grad: Tensor, shape_of: Tensor) -> Tensor:
        if self._by_slices(shape_of):
            kernel = self._kernel()
            covered = all(n % k == 0 for n, k in zip(shape_of.shape[2:], kernel, strict=True))
            out = (torch.empty_like if covered else torch.zeros_like)(
                shape_of, memory_format=torch.contiguous_format
            )
            share = grad / self._divisor()
            for window in self._windows(out):
                window.copy_(share)
            return out
        backward = (torch.ops.aten.avg_pool2d_backward, torch.ops.aten.avg_pool3d_backward)
        return backward[self.dims - 2](grad, shape_of, *self.arguments)

    def _kernel(self) -> tuple[int, ...] | None:
        return _as_tuple(self.arguments[0], self.dims)

    def _divisor(self) -> int:
        override = self.arguments[5]
        return override if override is not None else math.prod(self._kernel() or ())

    def _by_slices(self, x: Tensor) -> bool:
        """Whether the pooling is over disjoint windows that fit a contiguous float32 / float64
        CPU tensor, which its strided slices compute several times faster than PyTorch's
        channels-first kernel (``benchmarks/fast_path_parts.py`` measures the step's
        difference), with the same values: each window summed in PyTorch's order (only the
        sign of an all-zero window's sum can differ: PyTorch starts its sums from +0)."""
        kernel, (_, stride, padding, ceil_mode, _, divisor) = self._kernel(), self.arguments
        return (
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and x.is_contiguous()
            and x.dim() == self.dims + 2
            and kernel is not None
            and all(0 < k <= n for k, n in zip(kernel, x.shape[2:], strict=True))
            and (stride in ([], ()) or _as_tuple(stride, self.dims) == kernel)
            and _as_tuple(padding, self.dims) == (0,) * self.dims
            and not ceil_mode
            and divisor != 0  # PyTorch refuses a zero divisor: its kernel raises the error
        )

    def _windows(self, x: Tensor) -> list[Tensor]:
        """The strided views of ``x`` that hold each window's elements, in PyTorch's summation
        order (row-major within a window), cropped to whole windows."""
        kernel = self._kernel() or ()
        sizes = [n // k * k for n, k in zip(x.shape[2:], kernel, strict=True)]
        return [
            x[(..., *(slice(o, n, k) for o, n, k in zip(offset, sizes, kernel, strict=True)))]
            for offset in itertools.product(*(range(k) for k in kernel))
        ]


class _AveragePoolInputGrad(torch.autograd.Function):
    """Average pooling's input gradient: linear in ``grad`` and independent of the input.

    Its backward is the pooling itself (the adjoint of the adjoint), and it has no edge to the
    input: PyTorch's own records the input's (zero) derivative, so a double backward through it
    pushes zeros back through the forward graph. ``shape_of`` only carries the input's shape.
    """

    @staticmethod
    def forward(ctx: Any, grad: Tensor, shape_of: Tensor, geometry: _PoolGeometry) -> Tensor:
        ctx.geometry = geometry
        return geometry.input_grad(grad, shape_of)

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor, None, None]:
        return ctx.geometry.forward(upstream), None, None


class _AveragePool(torch.autograd.Function):
    """Average pooling whose input gradient, taken with a graph, is an
    :class:`_AveragePoolInputGrad` (its PyTorch kernel or, where it applies, strided slices)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, geometry: _PoolGeometry) -> Tensor:
        ctx.save_for_backward(x)
        ctx.set_materialize_grads(False)
        ctx.geometry = geometry
        return geometry.forward(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None]:
        if grad is None:
            return None, None
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _AveragePoolInputGrad.apply(grad, x.detach(), ctx.geometry), None
        return ctx.geometry.input_grad(grad, x), None


def _average_pool(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    """``func(*args, **kwargs)`` (2-d / 3-d average pooling) as an :class:`_AveragePool`, or None
    where it does not apply (anything but a batched floating-point input)."""
    dims = _AVERAGE_POOLS[func]
    bound = dict(zip(_POOL_ARGUMENTS, args, strict=False)) | kwargs
    x = bound.get("input")
    if not (
        set(bound) <= set(_POOL_ARGUMENTS)
        and "kernel_size" in bound
        and isinstance(x, Tensor)
        and x.is_floating_point()
        and x.dim() == dims + 2
        and torch.is_grad_enabled()
    ):
        return None
    stride = bound.get("stride")
    arguments = (
        bound["kernel_size"],
        [] if stride is None else stride,
        bound.get("padding", 0),
        bound.get("ceil_mode", False),
        bound.get("count_include_pad", True),
        bound.get("divisor_override"),
    )
    return _AveragePool.apply(x, _PoolGeometry(dims, arguments))


def _as_tuple(value: Any, dims: int) -> tuple[int, ...] | None:
    if isinstance(value, int):
        return (value,) * dims
    if (
        isinstance(value, (tuple, list))
        and len(value) == dims
        and all(isinstance(v, int) for v in value)
    ):
        return tuple(value)
    return None


def _autocast_operand(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``t`` as autocast casts a convolution operand: floating tensors but float64 to ``dtype``."""
    if t is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _convolution(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    """``func(*args, **kwargs)`` as a :class:`_Convolution`, or None where it does not apply.

    It applies to batched inputs with leaf weights (module parameters: a weight computed from
    the input, or by a parametrization, keeps PyTorch's convolution), integer padding, and at
    least :data:`SMALL_CONV_MACS` multiply-accumulates. Under autocast the operands are cast as
    autocast would cast them.
    """
    dims = _CONVOLUTIONS[func]
    # A malformed call never gets here: PyTorch parses the arguments before the mode sees them.
    bound = dict(zip(_CONV_ARGUMENTS, args, strict=False)) | kwargs
    x, weight, bias = bound.get("input"), bound.get("weight"), bound.get("bias")
    geometry = [
        _as_tuple(bound.get(name, default), dims)
        for name, default in (("stride", 1), ("padding", 0), ("dilation", 1))
    ]
    groups = bound.get("groups", 1)
    if not (
        set(bound) <= set(_CONV_ARGUMENTS)
        and isinstance(x, Tensor)
        and isinstance(weight, Tensor)
        and (bias is None or isinstance(bias, Tensor))
        and x.dim() == dims + 2
        and all(t is None or t.grad_fn is None for t in (weight, bias))
        and all(g is not None for g in geometry)
        and isinstance(groups, int)
        and torch.is_grad_enabled()
    ):
        return None
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    if autocast:
        dtype = torch.get_autocast_dtype(device)
        x, weight, bias = (_autocast_operand(t, dtype) for t in (x, weight, bias))
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        return None
    stride, padding, dilation = geometry
    conv = _ConvGeometry(dims, stride, padding, dilation, groups)
    if conv.multiply_accumulates(x, weight) < SMALL_CONV_MACS:
        return None
    with torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext():
        return _Convolution.apply(x, weight, bias, conv)


class _PenaltyForward(TorchFunctionMode):
    """Routes a critic's ReLU / leaky ReLU, convolutions, group norms and average pooling
    through gradpen's exact twins.

    Out-of-place ReLU / leaky ReLU become :class:`_PiecewiseLinear`; ``conv1d/2d/3d`` with
    parameter weights become :class:`_Convolution`; ``group_norm`` :class:`_GroupNorm` and
    ``avg_pool2d/3d`` :class:`_AveragePool`. In-place calls and every other function run
    unchanged (their result is still exact; they just do not get the shortcut).
    """

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        twin = _twin(func, args, kwargs)
        if twin is None:
            return func(*args, **kwargs)
        out = fast_or_plain(twin, lambda: func(*args, **kwargs), getattr(func, "__name__", func))
        # a convolution the twin does not cover (a computed weight, string padding) is None
        return func(*args, **kwargs) if out is None else out


def _twin(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A zero-argument call of the twin for ``func(*args, **kwargs)``, or None if it has none."""
    if not kwargs.get("inplace", False) and len(args) <= 2:
        if func in _RELUS and len(args) == 1:
            return lambda: _PiecewiseLinear.apply(args[0], 0.0)
        if func is F.leaky_relu:
            slope = args[1] if len(args) == 2 else kwargs.get("negative_slope", 0.01)
            return lambda: _PiecewiseLinear.apply(args[0], float(slope))
    if func in _CONVOLUTIONS:
        return lambda: _convolution(func, args, kwargs)
    if func is F.group_norm:
        return lambda: _group_norm(args, kwargs)
    if func in _AVERAGE_POOLS:
        return lambda: _average_pool(func, args, kwargs)
    return None


def fast_or_plain(fast: Any, plain: Any, what: Any) -> Any:
    """``fast()``; if it raises, ``plain()`` instead (PyTorch's own computation of the same thing).

    A call that is wrong in itself fails in ``plain()`` too, with PyTorch's own error; only a
    call that the fast path alone cannot handle runs plain, with a warning naming it.
    """
    try:
        return fast()
    except Exception as error:
        result = plain()
        warnings.warn(
            f"gradpen's fast path could not handle {what} ({type(error).__name__}: {error}); "
            "it ran as plain autograd instead (exact, only slower). Pass fast=False to skip the "
            "fast path.",
            RuntimeWarning,
            stacklevel=3,
        )
        return result


def twins(enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """Inside it, ReLU / leaky ReLU, convolutions, group norms and average pooling run as the
    exact twins (if ``enabled``).

    Use it through :func:`gradpen.penalty_forward`, which also picks kernels that can be
    differentiated twice.

    Args:
        enabled: ``False`` gives a context that does nothing (plain autograd).

    Returns:
        A context manager.
    """
    return _PenaltyForward() if enabled else contextlib.nullcontext()


# The twins whose backward knows the input-only pass.
_INPUT_ONLY_NODES = (_Convolution._backward_cls, _GroupNorm._backward_cls)


@contextlib.contextmanager
def input_only_pass(nodes: Iterable[Any], *, reused_forward: bool = False) -> Iterator[None]:
    """The backward inside the block asks only for the input gradient (of the given graph nodes).

    The :class:`_Convolution` and :class:`_GroupNorm` nodes among ``nodes`` then return their
    input gradient as a :class:`_ConvolutionInputGrad` / :class:`_GroupNormInputGrad` (cheap
    double backward); they are reset on the way out, so a later backward through the same nodes
    (the training loss's) gets PyTorch's own gradients.

    Args:
        nodes: the autograd nodes of the scores' graph (any iterable; others are ignored).
        reused_forward: the forward is also the training loss's (forward reuse), so the loss's
            backward may reuse the pass: convolutions keep it, for their input gradient and
            their weight gradient (:func:`_loss_signal_scale`). A penalty's own forward feeds
            only the penalty, and keeps nothing.
    """
    twinned = [node for node in nodes if isinstance(node, _INPUT_ONLY_NODES)]
    for node in twinned:
        node.input_only = True
        node.keeps_pass = reused_forward
    try:
        yield
    finally:
        for node in twinned:
            node.input_only = node.keeps_pass = False


def reaches_forward_on_purpose(node: Any) -> bool:
    """Whether ``node`` is a twin's input-gradient node that depends on the forward's activations
    by design (a group norm's: its exact second derivative needs them)."""
    return isinstance(node, _GroupNormInputGrad._backward_cls)


def twin_kind(node: Any) -> str | None:
    """``"conv"``, ``"group norm"``, ``"average pool"``, ``"ReLU"`` or ``"leaky ReLU"`` for a
    twin's autograd node, else None."""
    if isinstance(node, _Convolution._backward_cls):
        return "conv"
    if isinstance(node, _GroupNorm._backward_cls):
        return "group norm"
    if isinstance(node, _AveragePool._backward_cls):
        return "average pool"
    if isinstance(node, _PiecewiseLinear._backward_cls):
        return "ReLU" if node.slope == 0 else "leaky ReLU"
    return None
