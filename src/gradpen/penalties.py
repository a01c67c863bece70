"""The gradient-penalty core: sample points, take the input gradient, score it per sample.

Every per-sample function returns a ``(B,)`` tensor; weighting and reduction belong to the
caller (or to :class:`Penalty`, which applies the conventions of the reference material).
The gradient is always taken with respect to the data only (never the condition), one
interpolation coefficient is drawn per sample, and the norm runs over every non-batch dim:
the three places where popular implementations are quietly wrong.

Speed (:func:`penalty_forward`): the penalty's own critic forward runs with exact twins of
ReLU / leaky ReLU, whose backward treats the activation mask as a constant (its derivative is
zero almost everywhere), so the double backward stops at the backward graph instead of pushing
zeros back through the whole forward pass; and of ``conv1d/2d/3d``, whose input gradient, when
:func:`gradient_of_scores` asks for it, is a node with a cheaper backward than PyTorch's own
double backward of a convolution.

Precision: norms are taken in float32 for 16-bit gradients, and ``scaler=`` (a
``torch.amp.GradScaler``) follows PyTorch's gradient-penalty recipe for float16: the scores
are scaled before ``autograd.grad`` and the gradient unscaled out of place.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

Critic = Callable[..., Tensor]

__all__ = [
    "PENALTIES",
    "Penalty",
    "dragan",
    "grad_norm",
    "gradient_of_scores",
    "input_gradient",
    "interpolate",
    "lazy_adam_hyperparameters",
    "penalty_forward",
    "perturb",
    "r1",
    "r2",
    "wgan_gp",
    "zero_centered",
]


def _check_batch(x: Tensor, what: str) -> None:
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(
            f"{what} must have a non-empty batch dimension, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")


def _check_pair(real: Tensor, fake: Tensor) -> None:
    _check_batch(real, "real")
    _check_batch(fake, "fake")
    if real.shape != fake.shape or real.dtype != fake.dtype or real.device != fake.device:
        raise ValueError(
            "real and fake must share shape, dtype and device; got real "
            f"{tuple(real.shape)} {real.dtype} on {real.device} and fake "
            f"{tuple(fake.shape)} {fake.dtype} on {fake.device}"
        )


def _per_sample_shape(x: Tensor) -> tuple[int, ...]:
    """(B, 1, ..., 1): one value per sample that broadcasts over every other dim."""
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def interpolate(real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Points ``eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per sample.

    Works for any rank (2-D points, images, sequences). The result is detached: the penalty
    trains the critic, so no gradient may flow back into the generator that made ``fake``.
    """
    _check_pair(real, fake)
    eps = torch.rand(
        _per_sample_shape(real), generator=generator, dtype=real.dtype, device=real.device
    )
    return (eps * real.detach() + (1 - eps) * fake.detach()).detach()


def perturb(
    real: Tensor,
    *,
    scale: float = 0.5,
    noise: str = "uniform",
    spread: str = "global",
    generator: torch.Generator | None = None,
) -> Tensor:
    """DRAGAN's perturbed reals ``real + scale * std * u`` (detached).

    Args:
        real: the real batch, shape (B, ...).
        scale: the perturbation's size in units of ``std`` (the official code's 0.5).
        noise: ``"uniform"`` draws ``u ~ U[0, 1)`` per element, as in the official DRAGAN code;
            ``"gaussian"`` draws ``u ~ N(0, 1)``, the paper's ``N(0, c * sigma)`` variant.
        spread: ``"global"`` (default, the official code's ``X.std()``): one std over all
            elements of the batch, so every element (a constant background pixel too) moves
            by the same scale; ``"feature"``: the std of each feature over the batch, shape
            (1, ...), so a feature that is constant across the batch is never perturbed.
        generator: the random stream for ``u``.

    Returns:
        The perturbed points, shape (B, ...). A single element has no spread, so its std is
        zero and it is returned unchanged (as is every feature of a batch of one with
        ``spread="feature"``).
    """
    _check_batch(real, "real")
    if noise not in ("uniform", "gaussian"):
        raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
    if spread not in ("global", "feature"):
        raise ValueError(f"spread must be 'global' or 'feature', got {spread!r}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    data = real.detach()
    dims = {"global": None, "feature": 0}[spread]
    std = data.std(dim=dims, keepdim=True, unbiased=False)
    draw = torch.rand if noise == "uniform" else torch.randn
    u = draw(data.shape, generator=generator, dtype=data.dtype, device=data.device)
    return data + scale * std * u


def _uses_batch_statistics(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (
        module.training or not module.track_running_stats
    )


def check_no_batchnorm(critic: Critic) -> None:
    """Raise ValueError if ``critic`` has a batch norm layer that uses batch statistics."""
    if not isinstance(critic, nn.Module):
        return
    for name, module in critic.named_modules():
        if _uses_batch_statistics(module):
            raise ValueError(
                f"the critic's layer {name or type(critic).__name__!r} is {type(module).__name__} "
                "using batch statistics: the critic then maps a batch to a batch, so the gradient "
                "of one sample's score is not the per-sample gradient the penalty assumes. Use "
                "layer norm (nn.LayerNorm / nn.GroupNorm(1, C)), instance norm or no "
                "normalization in the critic, or pass allow_batchnorm=True to override."
            )


def _scores(critic: Critic, x: Tensor, cond: Any) -> Tensor:
    out = critic(x) if cond is None else critic(x, cond)
    return _as_scores(out, x.shape[0])


def _as_scores(out: Tensor, batch: int) -> Tensor:
    if not isinstance(out, Tensor):
        raise ValueError(f"the critic must return a tensor, got {type(out).__name__}")
    if out.shape == (batch, 1):
        out = out.squeeze(1)
    if out.shape != (batch,):
        raise ValueError(
            f"the critic must return one score per sample, shape ({batch},) or ({batch}, 1); "
            f"got {tuple(out.shape)}"
        )
    return out


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
        ctx.from_output = slope >= 0
        ctx.save_for_backward(out if ctx.from_output else x)
        ctx.slope = slope
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
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
_CONV_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


@dataclass(frozen=True)
class _ConvGeometry:
    """Stride, padding, dilation and groups of one N-d convolution call."""

    dims: int
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def backward(
        self, grad: Tensor, x: Tensor, weight: Tensor, mask: tuple[bool, bool, bool]
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The input, weight and bias gradients selected by ``mask`` (differentiable)."""
        grad_x = None
        if mask[0] and self._folds_input_grad(weight):
            grad_x, mask = self._input_grad_by_fold(grad, x, weight), (False, *mask[1:])
        if not any(mask):
            return grad_x, None, None
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
        return (grads[0] if grad_x is None else grad_x), grads[1], grads[2]

    def _folds_input_grad(self, weight: Tensor) -> bool:
        """Whether the input gradient is a matmul and ``fold`` (:meth:`_input_grad_by_fold`).

        On CPU, for a 2-D convolution from 1-3 channels (an image critic's first layer), that
        ran 1.4-2.7x faster than oneDNN's input gradient, and from 8 channels on slower
        (``benchmarks/conv_kernels.py``, torch 2.13).
        """
        return (
            weight.device.type == "cpu"
            and self.dims == 2
            and self.groups == 1
            and weight.shape[1] <= FEW_CHANNELS
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
    """

    @staticmethod
    def forward(
        ctx: Any, grad: Tensor, shape_of: Tensor, weight: Tensor, geometry: _ConvGeometry
    ) -> Tensor:
        ctx.save_for_backward(grad, weight)
        ctx.geometry = geometry
        return geometry.backward(grad, shape_of, weight, (True, False, False))[0]

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, None, Tensor | None, None]:
        grad, weight = ctx.saved_tensors
        geometry: _ConvGeometry = ctx.geometry
        grad_of_grad = geometry.forward(upstream, weight, None) if ctx.needs_input_grad[0] else None
        grad_of_weight = (
            geometry.backward(grad, upstream, weight, (False, True, False))[1]
            if ctx.needs_input_grad[2]
            else None
        )
        return grad_of_grad, None, grad_of_weight, None


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
    if _WILL_ENGINE_EXECUTE is None:
        return True
    try:
        return _WILL_ENGINE_EXECUTE(node)
    except RuntimeError:
        return True


class _Convolution(torch.autograd.Function):
    """A convolution (parameters as leaves) whose backward knows the input-only pass.

    While :func:`gradient_of_scores` takes the input gradient it sets ``input_only`` on these
    nodes: the backward then returns just the input gradient, as a
    :class:`_ConvolutionInputGrad` (the weights get no gradient in that pass, which asks for the
    input's only). Any other backward gets PyTorch's own gradients.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, geometry: _ConvGeometry
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        ctx.input_only = False
        return geometry.forward(x, weight, bias)

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        geometry: _ConvGeometry = ctx.geometry
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        if ctx.input_only:  # the pass asks for the input's gradient: every conv on the way needs it
            if not needs_x:
                return None, None, None, None
            return _ConvolutionInputGrad.apply(grad, x.detach(), weight, geometry), None, None, None
        needs_x = needs_x and _engine_uses(ctx.next_functions[0][0])
        mask = (needs_x, needs_weight, needs_bias and ctx.has_bias)
        grad_x, grad_weight, grad_bias = geometry.backward(grad, x, weight, mask)
        return grad_x, grad_weight, grad_bias, None


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
    the input, or by a parametrization, keeps PyTorch's convolution) and integer padding.
    Under autocast the operands are cast as autocast would cast them.
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
    with torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext():
        return _Convolution.apply(
            x, weight, bias, _ConvGeometry(dims, stride, padding, dilation, groups)
        )


class _PenaltyForward(TorchFunctionMode):
    """Routes a critic's ReLU / leaky ReLU and convolutions through gradpen's exact twins.

    Out-of-place ReLU / leaky ReLU become :class:`_PiecewiseLinear`; ``conv1d/2d/3d`` with
    parameter weights become :class:`_Convolution`. In-place calls and every other function run
    unchanged (their result is still exact; they just do not get the shortcut).
    """

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if not kwargs.get("inplace", False) and len(args) <= 2:
            if func in _RELUS and len(args) == 1:
                return _PiecewiseLinear.apply(args[0], 0.0)
            if func is F.leaky_relu:
                slope = args[1] if len(args) == 2 else kwargs.get("negative_slope", 0.01)
                return _PiecewiseLinear.apply(args[0], float(slope))
        if func in _CONVOLUTIONS:
            out = _convolution(func, args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def penalty_forward() -> contextlib.AbstractContextManager[Any]:
    """Context for a critic forward whose scores a penalty will differentiate (forward reuse).

    Inside it, ReLU / leaky ReLU and convolutions run as exact twins with a cheaper double
    backward (see the module docstring): scores, parameter gradients and the penalty's
    gradients are the same, only faster. :func:`input_gradient` always uses it; use it around
    the loss's forward on ``real`` when its scores feed ``r1(..., scores=)``, and then
    ``loss.backward(inputs=params)``: the twins skip the gradient into ``real`` that a plain
    ``backward()`` would have to compute.
    """
    return _PenaltyForward()


def _eager(critic: Critic) -> Critic:
    """The eager module behind a ``torch.compile``-d one (same parameters).

    aot_autograd cannot run the double backward a penalty needs, so the penalty's own forward
    runs eagerly; the loss's forward may stay compiled.
    """
    original = getattr(critic, "_orig_mod", None)
    return original if isinstance(original, nn.Module) else critic


_COMPILED_NODE = "CompiledFunctionBackward"


def _convolution_nodes(scores: Tensor) -> list[Any]:
    """The :class:`_Convolution` nodes in the graph of ``scores``.

    Refuses scores whose graph went through torch.compile: their double backward fails.
    """
    convolutions = []
    seen: set[Any] = set()
    stack = [scores.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__.startswith(_COMPILED_NODE):
            raise ValueError(
                "the scores come from a torch.compile-d forward: PyTorch's aot_autograd does "
                "not support the double backward a gradient penalty needs. Compute the penalty "
                "from an eager forward (pass the critic without real_scores/fake_scores; "
                "gradpen runs a compiled module's eager original) or use "
                "gradpen.compiled.CompiledCriticStep"
            )
        if isinstance(node, _Convolution._backward_cls):
            convolutions.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return convolutions


def _check_cond(cond: Any, batch: int) -> None:
    if isinstance(cond, Tensor) and (cond.dim() == 0 or cond.shape[0] != batch):
        raise ValueError(
            f"cond must have the batch size {batch} as its first dim, got shape {tuple(cond.shape)}"
        )


def gradient_of_scores(scores: Tensor, x: Tensor, *, scaler: Any = None) -> Tensor:
    """Gradient of ``scores.sum()`` with respect to ``x``, keeping the graph for a backward.

    ``x`` must be the tensor (with ``requires_grad``) that produced ``scores``. The training loop
    uses this to reuse the loss's own forward pass for R1 on reals and R2 on fakes.

    ``scaler`` (an enabled ``torch.amp.GradScaler``): the sum is multiplied by the scale before
    ``autograd.grad`` and the gradient divided by it out of place, so float16 gradients do not
    underflow. On a step where the scaled gradient overflows the result is inf/nan, the caller's
    scaled backward then yields non-finite gradients and ``scaler.step`` skips the step.
    """
    if not x.requires_grad:
        raise ValueError("x must require grad and be the input that produced the scores")
    if not scores.requires_grad:
        raise ValueError(
            "the critic's output does not depend on its input x (the output does not require "
            "grad), so there is no input gradient to penalize"
        )
    convolutions = _convolution_nodes(scores)
    total = scores.sum()
    scaled = scaler is not None and scaler.is_enabled()
    if scaled:
        total = scaler.scale(total)
    for node in convolutions:
        node.input_only = True
    try:
        (grad,) = torch.autograd.grad(total, x, create_graph=True, allow_unused=True)
    finally:
        for node in convolutions:
            node.input_only = False
    if grad is None:
        raise ValueError(
            "the critic's output does not depend on its input x, so there is no input gradient "
            "to penalize; check that the critic uses x (and not only cond)"
        )
    return grad * (1.0 / scaler.get_scale()) if scaled else grad


def input_gradient(
    critic: Critic,
    x: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    scaler: Any = None,
) -> Tensor:
    """``d critic(x[, cond]).sum() / dx`` with ``create_graph=True``, shape of ``x``.

    Because each score depends only on its own sample, row ``i`` of the result is the gradient
    of score ``i``. The caller's tensor is not modified: the gradient is taken with respect to
    a detached copy, and ``cond`` is passed unchanged (the gradient is with respect to data only).
    A ``torch.compile``-d module is run through its eager original (same parameters).

    For speed the forward runs ReLU / leaky ReLU with a constant-mask backward (see the module
    docstring): values and parameter gradients are exact, but in a purely piecewise-linear
    critic the result then has no graph back to ``x`` (its derivative in ``x`` is zero anyway).
    ``scaler``: see :func:`gradient_of_scores`.
    """
    _check_batch(x, "x")
    _check_cond(cond, x.shape[0])
    critic = _eager(critic)
    if not allow_batchnorm:
        check_no_batchnorm(critic)
    x = x.detach().requires_grad_(True)
    with penalty_forward():
        scores = _scores(critic, x, cond)
    return gradient_of_scores(scores, x, scaler=scaler)


def grad_norm(g: Tensor) -> Tensor:
    """L2 norm of each sample's gradient over all non-batch dims, shape ``(B,)``.

    Finite value and finite gradient at ``g = 0`` (the plain norm's derivative is 0/0 there).
    16-bit gradients are normed in float32 (the result is float32).
    """
    squared = _squared_norm(g)
    positive = squared > 0
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(squared))


def _squared_norm(g: Tensor) -> Tensor:
    flat = g.flatten(1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    return flat.pow(2).sum(dim=1)


def _distance_from_target(g: Tensor, target: float, one_sided: bool) -> Tensor:
    """``(||g|| - target)^2`` per sample, or ``max(0, ||g|| - target)^2`` when one-sided."""
    excess = grad_norm(g) - target
    if one_sided:
        excess = excess.clamp_min(0)
    return excess.pow(2)


def wgan_gp(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    target: float = 1.0,
    one_sided: bool = False,
    cond: Any = None,
    allow_batchnorm: bool = False,
    generator: torch.Generator | None = None,
    scaler: Any = None,
) -> Tensor:
    """``(||grad D(x_hat)|| - target)^2`` at interpolates, per sample (Gulrajani et al. 2017).

    ``one_sided=True`` gives ``max(0, ||g|| - target)^2``: only norms above the target cost.
    """
    x_hat = interpolate(real, fake, generator=generator)
    g = input_gradient(critic, x_hat, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler)
    return _distance_from_target(g, target, one_sided)


def r1(
    critic: Critic,
    real: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    scores: Tensor | None = None,
    scaler: Any = None,
) -> Tensor:
    """``||grad D(real)||^2`` per sample (Mescheder et al. 2018); weight it by gamma / 2.

    With ``scores`` (the critic's outputs on ``real``, computed from a ``real`` that requires
    grad), the gradient reuses that forward pass instead of running the critic again.
    """
    return _squared_norm(_gradient_at(critic, real, cond, allow_batchnorm, scores, scaler))


def r2(
    critic: Critic,
    fake: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    scores: Tensor | None = None,
    scaler: Any = None,
) -> Tensor:
    """``||grad D(fake)||^2`` per sample: R1's twin on generated samples."""
    return _squared_norm(_gradient_at(critic, fake, cond, allow_batchnorm, scores, scaler))


def _gradient_at(
    critic: Critic,
    x: Tensor,
    cond: Any,
    allow_batchnorm: bool,
    scores: Tensor | None,
    scaler: Any,
) -> Tensor:
    if scores is None:
        return input_gradient(critic, x, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler)
    if not allow_batchnorm:
        check_no_batchnorm(_eager(critic))
    scores = _as_scores(scores, x.shape[0])
    return gradient_of_scores(scores, x, scaler=scaler)


def dragan(
    critic: Critic,
    real: Tensor,
    *,
    target: float = 1.0,
    scale: float = 0.5,
    noise: str = "uniform",
    spread: str = "global",
    cond: Any = None,
    allow_batchnorm: bool = False,
    generator: torch.Generator | None = None,
    scaler: Any = None,
) -> Tensor:
    """``(||grad D(x)|| - target)^2`` around the reals (Kodali et al. 2017), per sample.

    As in the official DRAGAN code, ``x`` lies at a uniform random point (one per sample) on the
    segment between each real and its perturbation
    ``perturb(real, scale=scale, noise=noise, spread=spread)``; the default ``spread="global"``
    is the official code's one std over the whole batch (see :func:`perturb`).
    """
    noisy = perturb(real, scale=scale, noise=noise, spread=spread, generator=generator)
    x = interpolate(real, noisy, generator=generator)
    g = input_gradient(critic, x, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler)
    return _distance_from_target(g, target, one_sided=False)


def zero_centered(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    cond: Any = None,
    allow_batchnorm: bool = False,
    generator: torch.Generator | None = None,
    scaler: Any = None,
) -> Tensor:
    """``||grad D(x_hat)||^2`` at interpolates (Thanh-Tung et al. 2019's 0-GP), per sample."""
    x_hat = interpolate(real, fake, generator=generator)
    g = input_gradient(critic, x_hat, cond=cond, allow_batchnorm=allow_batchnorm, scaler=scaler)
    return _squared_norm(g)


@dataclass(frozen=True)
class _Spec:
    """How a registered penalty is computed and weighted."""

    terms: tuple[Callable[..., Tensor], ...]
    inputs: tuple[tuple[str, ...], ...]  # for each term, the keyword inputs it takes
    weight_factor: float  # WGAN-GP family: 1; R1/R2 family: 1/2 (weight is gamma)
    options: frozenset[str]
    fixed: tuple[tuple[str, Any], ...] = ()


PENALTIES: dict[str, _Spec] = {
    "none": _Spec((), (), 1.0, frozenset()),
    "wgan-gp": _Spec((wgan_gp,), (("real", "fake"),), 1.0, frozenset({"target", "one_sided"})),
    "one-sided": _Spec(
        (wgan_gp,), (("real", "fake"),), 1.0, frozenset({"target"}), (("one_sided", True),)
    ),
    "r1": _Spec((r1,), (("real",),), 0.5, frozenset()),
    "r2": _Spec((r2,), (("fake",),), 0.5, frozenset()),
    "r1r2": _Spec((r1, r2), (("real",), ("fake",)), 0.5, frozenset()),
    "dragan": _Spec((dragan,), (("real",),), 1.0, frozenset({"target", "scale", "noise"})),
    "zero-centered": _Spec((zero_centered,), (("real", "fake"),), 1.0, frozenset()),
}


class Penalty:
    """A configured penalty term, as a training loop uses it.

    ``Penalty("wgan-gp", weight=10.0)`` returns ``10 * mean(per-sample)``; R1/R2 terms return
    ``weight / 2 * mean(per-sample)`` so that ``weight`` is gamma. With ``every = k > 1`` the term
    is lazy (Karras et al. 2020): ``k`` times the term on steps where ``step % k == 0`` and an
    exact zero elsewhere, without calling the critic.

    ``scaler``: an enabled ``torch.amp.GradScaler`` for float16 training (PyTorch's
    gradient-penalty recipe; see :func:`gradient_of_scores`); the term is computed in float32.
    For the cheapest step call the penalty before the loss's forwards and backpropagate
    ``loss + term`` once.
    """

    def __init__(
        self,
        name: str,
        weight: float = 10.0,
        every: int = 1,
        *,
        allow_batchnorm: bool = False,
        scaler: Any = None,
        **options: Any,
    ) -> None:
        if name not in PENALTIES:
            raise ValueError(f"unknown penalty {name!r}; valid penalties: {', '.join(PENALTIES)}")
        spec = PENALTIES[name]
        unknown = set(options) - spec.options
        if unknown:
            allowed = ", ".join(sorted(spec.options)) or "none"
            raise ValueError(
                f"penalty {name!r} got unknown option(s) {', '.join(sorted(unknown))}; "
                f"its options are: {allowed}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"weight must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.name = name
        self.weight = float(weight)
        self.every = every
        self.allow_batchnorm = allow_batchnorm
        self.scaler = scaler
        self.options = dict(options)
        self._spec = spec

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Penalty({self.name!r}, weight={self.weight}, every={self.every}{extra})"

    @property
    def needs(self) -> frozenset[str]:
        """The inputs (``"real"``, ``"fake"``) the penalty reads."""
        return frozenset(name for inputs in self._spec.inputs for name in inputs)

    def active(self, step: int) -> bool:
        """Whether the term is computed at ``step`` (always, unless lazy)."""
        return bool(self._spec.terms) and self.weight > 0 and step % self.every == 0

    def __call__(
        self,
        critic: Critic,
        *,
        real: Tensor | None = None,
        fake: Tensor | None = None,
        cond: Any = None,
        step: int = 0,
        real_scores: Tensor | None = None,
        fake_scores: Tensor | None = None,
    ) -> Tensor:
        """The weighted scalar term at ``step``.

        ``real_scores`` / ``fake_scores``: the critic's outputs on ``real`` / ``fake`` from the
        loss's forward pass; R1 and R2 then reuse it (``real`` / ``fake`` must require grad and
        be the tensors that produced them). Other penalties ignore them.
        """
        given = {"real": real, "fake": fake}
        missing = [name for name in sorted(self.needs) if given[name] is None]
        if missing:
            raise ValueError(f"penalty {self.name!r} needs {' and '.join(missing)}")
        reference = real if real is not None else fake
        if not self.active(step):
            if reference is None:
                return torch.zeros(())
            return torch.zeros((), dtype=reference.dtype, device=reference.device)
        scores = {"real": real_scores, "fake": fake_scores}
        kwargs = dict(self._spec.fixed) | self.options
        total: Tensor | None = None
        for term, inputs in zip(self._spec.terms, self._spec.inputs, strict=True):
            args = [given[name] for name in inputs]
            extra = dict(kwargs)
            if term in (r1, r2):
                extra["scores"] = scores[inputs[0]]
            value = term(
                critic,
                *args,
                cond=cond,
                allow_batchnorm=self.allow_batchnorm,
                scaler=self.scaler,
                **extra,
            )
            total = value.mean() if total is None else total + value.mean()
        assert total is not None
        return (self.every * self.weight * self._spec.weight_factor) * total


def lazy_adam_hyperparameters(
    lr: float, betas: tuple[float, float], every: int
) -> tuple[float, tuple[float, float]]:
    """Adam's lr and betas corrected for a penalty applied every ``every`` steps (StyleGAN2).

    With ``c = every / (every + 1)``: ``lr * c`` and ``betas ** c``, so that the lazily
    regularized critic's optimizer keeps its effective step size and averaging horizon.
    """
    if every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every}")
    if every == 1:
        return lr, betas
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)
