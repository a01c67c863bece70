"""``gp.penalty_forward``: the convolution and activation twins are exact, in every pass.

Everything is compared in float64 against plain autograd on the same critic: values, the
input gradient, parameter gradients of the penalty, of a loss plus a reused-forward R1, and
third-order gradients (a gradient of the parameter gradient).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import gradpen as gp
from autograd_helpers import NoGradient
from gradpen import fastpath
from gradpen.nets import DCGANCritic28
from gradpen.nets.zoo import ResNetGNCritic


class Functional(nn.Module):
    """A critic written with ``F.conv*d`` calls and keyword arguments."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims
        shape = (3, 2) + (3,) * dims
        self.w1 = nn.Parameter(torch.randn(shape) * 0.3)
        self.w2 = nn.Parameter(torch.randn((4, 3) + (2,) * dims) * 0.3)
        self.b2 = nn.Parameter(torch.randn(4) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        h = F.leaky_relu(conv(x, self.w1, stride=2, padding=1), 0.1)
        h = torch.tanh(conv(input=h, weight=self.w2, bias=self.b2, dilation=2))
        return h.flatten(1).sum(dim=1)


def grouped_critic() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=(2, 1), padding=(1, 2)),
        nn.SiLU(),
        nn.Conv2d(4, 4, 3, groups=2, padding="same"),  # string padding: PyTorch's own conv
        nn.ReLU(),
        nn.Conv2d(4, 2, 2, padding_mode="reflect", padding=1),
        nn.Flatten(),
        nn.LazyLinear(1),
    )


def pooled_critic() -> nn.Module:
    """Group norm and average pooling: 2x2 (strided slices), overlapping 3x3, 3-d, and PyTorch's
    kernels (ceil mode, a channels-last input)."""

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
            self.norm = nn.GroupNorm(2, 4)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.LazyLinear(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(self.norm(self.conv1(x)))
            h = F.avg_pool2d(h, 2)
            h = F.avg_pool2d(self.conv2(h), 3, stride=2, padding=1, count_include_pad=False)
            h = F.group_norm(h.contiguous(memory_format=torch.channels_last), 1, eps=1e-3)
            h = F.avg_pool2d(torch.tanh(h), 2, ceil_mode=True) + F.avg_pool3d(h[:, None], 2).sum()
            return self.head(h.flatten(1)).squeeze(1)

    return Pooled()


CRITICS = {
    "conv1d": (lambda: Functional(1), (5, 2, 9)),
    "conv2d": (lambda: Functional(2), (5, 2, 9, 9)),
    "conv3d": (lambda: Functional(3), (3, 2, 5, 5, 5)),
    "groups, tuples, string padding, reflect": (grouped_critic, (5, 2, 8, 8)),
    "dcgan": (lambda: DCGANCritic28(width=4), (4, 1, 28, 28)),
    "resnet-gn": (lambda: ResNetGNCritic(2, width=4, groups=2), (3, 2, 8, 8)),
    "group norm and pooling": (pooled_critic, (3, 2, 10, 10)),
    "spectral norm (non-leaf weight)": (
        lambda: nn.Sequential(
            nn.utils.parametrizations.spectral_norm(nn.Conv2d(2, 3, 3)),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(3 * 7 * 7, 1),
        ),
        (4, 2, 9, 9),
    ),
}


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    factory, shape = CRITICS[name]
    torch.manual_seed(0)
    critic = factory().double()
    x = torch.randn(shape, dtype=torch.float64)
    critic(x)  # materialize lazy modules
    return critic.eval(), x


def plain_input_gradient(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return g


def parameter_gradients(value: torch.Tensor, critic: nn.Module, **kwargs) -> list[torch.Tensor]:
    return list(
        torch.autograd.grad(value, list(critic.parameters()), materialize_grads=True, **kwargs)
    )


def assert_all_close(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CRITICS)
def test_penalty_gradients_equal_plain_autograd(name):
    critic, x = make(name)
    fast = gp.input_gradient(critic, x, allow_batchnorm=True)
    slow = plain_input_gradient(critic, x)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    fast_value, slow_value = (g.pow(3).sum() for g in (fast, slow))  # a non-quadratic penalty
    assert_all_close(
        parameter_gradients(fast_value, critic), parameter_gradients(slow_value, critic)
    )


@pytest.mark.parametrize(
    "name", ["conv2d", "dcgan", "groups, tuples, string padding, reflect", "resnet-gn"]
)
def test_reused_forward_gives_the_loss_and_r1_gradients_of_plain_autograd(name):
    """The input-only pass must not leak into the loss's own backward through the same nodes."""
    critic, x = make(name)
    results = []
    for mode in (gp.penalty_forward(), torch.enable_grad()):
        real = x.detach().requires_grad_(True)
        with mode:
            scores = critic(real)
        r1 = gp.r1(critic, real, scores=scores, allow_batchnorm=True)
        objective = scores.pow(2).mean() + 5.0 * r1.mean()
        results.append(parameter_gradients(objective, critic))
    assert_all_close(*results)


class CountConvGradients(TorchDispatchMode):
    """Counts computed convolution input gradients (``convolution_backward``'s or the fold's),
    weight gradients and calls of ``convolution_backward``."""

    def __enter__(self) -> CountConvGradients:
        self.inputs = self.weights = self.calls = 0
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.inputs += args[-1][0]
            self.weights += args[-1][1]
            self.calls += 1
        self.inputs += func is torch.ops.aten.col2im.default
        return func(*args, **(kwargs or {}))


def test_backward_with_inputs_skips_the_gradient_into_the_reused_batch():
    """``backward(inputs=params)`` prunes the batch's gradient; a plain backward still gets it."""
    critic, x = make("dcgan")
    params = list(critic.parameters())
    runs = {}
    for twins, inputs in ((True, None), (True, params), (False, None)):
        real = x.detach().requires_grad_(True)
        with gp.penalty_forward() if twins else torch.enable_grad():
            scores = critic(real)
        r1 = gp.r1(critic, real, scores=scores)
        critic.zero_grad(set_to_none=True)
        with CountConvGradients() as counter:
            (scores.pow(2).mean() + 5.0 * r1.mean()).backward(inputs=inputs)
        runs[twins, inputs is None] = (counter.inputs, [p.grad for p in params], real.grad)
    full, pruned, plain = runs[True, True], runs[True, False], runs[False, True]
    assert pruned[2] is None
    assert pruned[0] == full[0] - 1  # the first conv's input gradient is not computed
    assert_all_close(pruned[1], plain[1])
    assert_all_close([full[2], *full[1]], [plain[2], *plain[1]])


def reused_forward_backward(
    twins: bool, feature_weight: float = 0.0, dtype: torch.dtype = torch.float64
) -> tuple[tuple[int, int, int], list[torch.Tensor]]:
    """The DCGAN critic's reused-forward R1 step: the convolution input and weight gradients
    and the calls of ``convolution_backward`` in its backward, and the parameter gradients.

    The loss is ``mean(scores**2)`` (a different ``dL/dD`` per sample) plus, with
    ``feature_weight``, a loss on the last convolution's activation (a signal into that
    convolution that does not come from the scores).
    """
    critic, x = make("dcgan")
    critic, x = critic.to(dtype), x.to(dtype)
    features = []
    hook = critic.features[4].register_forward_hook(lambda module, args, out: features.append(out))
    real = x.detach().requires_grad_(True)
    with gp.penalty_forward() if twins else torch.enable_grad():
        scores = critic(real)
    hook.remove()
    r1 = gp.r1(critic, real, scores=scores)
    objective = scores.pow(2).mean() + 5.0 * r1.mean() + feature_weight * features[0].pow(3).mean()
    params = list(critic.parameters())
    with CountConvGradients() as counter:
        objective.backward(inputs=params)
    return (counter.inputs, counter.weights, counter.calls), [p.grad for p in params]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reused_forward_draws_on_the_penalty_pass(dtype):
    """The inner convolution's input gradient is the input-only pass's, scaled per sample; each
    convolution's weight gradient for the loss and the penalty is one kernel (plain autograd
    takes the penalty's as a forward convolution, which is not counted), and its bias gradient a
    sum (``convolution_backward`` would compute the weight's as well, at the full cost)."""
    fast_counts, fast = reused_forward_backward(twins=True, dtype=dtype)
    plain_counts, plain = reused_forward_backward(twins=False, dtype=dtype)
    assert (fast_counts, plain_counts) == ((0, 2, 2), (1, 2, 2))
    if dtype == torch.float64:
        assert_all_close(fast, plain)
    else:
        for a, b in zip(fast, plain, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_weight_gradients_apart_give_the_same_gradients(monkeypatch):
    """Without the hand-over each convolution computes the loss's and the penalty's weight
    gradients apart: two kernels each, the same gradients."""
    fused_counts, fused = reused_forward_backward(twins=True)
    monkeypatch.setattr(fastpath, "_leave_weight_grad_to_loss", lambda *args: False)
    apart_counts, apart = reused_forward_backward(twins=True)
    assert (fused_counts, apart_counts) == ((0, 2, 2), (0, 4, 4))
    assert_all_close(fused, apart)


def test_a_loss_on_the_critics_features_gets_the_convolutions_own_gradients():
    """A signal that is no multiple of the penalty pass's is not taken for one: the inner
    convolution computes its input gradient, and both convolutions below the feature loss their
    loss and penalty weight gradients apart."""
    counts, fast = reused_forward_backward(twins=True, feature_weight=1e-3)
    assert counts == (1, 4, 4)
    assert_all_close(fast, reused_forward_backward(twins=False, feature_weight=1e-3)[1])


@pytest.mark.parametrize("loss_reaches_the_forward", ["no", "with no gradient"])
def test_the_penalty_keeps_its_weight_gradient_where_the_loss_gives_none(
    loss_reaches_the_forward,
):
    """The penalty leaves its weight gradient only to a forward node that runs later in the same
    backward: a backward of the penalty alone keeps it; a forward node that gets no gradient of
    its own still adds the penalty's."""
    critic, x = make("dcgan")
    weights = [p for p in critic.parameters() if p.dim() > 1]  # the biases get none from R1
    handed: list[bool] = []
    original = fastpath._leave_weight_grad_to_loss

    def gradients(twins: bool) -> list[torch.Tensor]:
        real = x.detach().requires_grad_(True)
        with gp.penalty_forward() if twins else torch.enable_grad():
            scores = critic(real)
        objective = 5.0 * gp.r1(critic, real, scores=scores).mean()
        if loss_reaches_the_forward == "with no gradient":
            objective = objective + NoGradient.apply(scores).sum()
        return torch.autograd.grad(objective, weights)

    expected = gradients(False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            fastpath,
            "_leave_weight_grad_to_loss",
            lambda *args: handed.append(result := original(*args)) or result,
        )
        got = gradients(True)
    assert handed == [loss_reaches_the_forward != "no"] * 2
    assert_all_close(got, expected)


def reuse(grad: torch.Tensor, signal: torch.Tensor, input_grad: torch.Tensor):
    """The input gradient the loss's backward takes for ``grad`` from a pass that sent ``signal``
    and got ``input_grad`` (``_loss_signal_scale``'s factor times it), or None (computed)."""
    earlier = fastpath._InputOnlyPass.keep(signal, input_grad)
    scale = None if earlier is None else fastpath._loss_signal_scale(grad, earlier)
    return None if scale is None else input_grad * scale[:, None]


@torch.no_grad()  # as in a backward that builds no graph
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_signal_scale_by_hand(dtype):
    signal = torch.tensor([[1.0, 2.0, -2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 4.0]], dtype=dtype)
    input_grad = torch.tensor([[1.0, 1.0], [5.0, 5.0], [2.0, -1.0]], dtype=dtype)
    # per sample: 3 times, zero where the pass sent zero, -0.5 times
    grad = torch.tensor([[3.0, 6.0, -6.0], [0.0, 0.0, 0.0], [-1.5, 0.0, -2.0]], dtype=dtype)
    expected = torch.tensor([[3.0, 3.0], [0.0, 0.0], [-1.0, 0.5]], dtype=dtype)
    torch.testing.assert_close(reuse(grad, signal, input_grad), expected, rtol=0, atol=1e-15)
    off = grad.clone()
    off[2, 1] = 1e-4  # sample 2 is no longer a multiple of the pass's signal
    assert reuse(off, signal, input_grad) is None
    woken = grad.clone()
    woken[1, 0] = 1.0  # a signal where the pass sent none
    assert reuse(woken, signal, input_grad) is None
    broken = grad.clone()
    broken[0, 0] = float("nan")
    assert reuse(broken, signal, input_grad) is None
    assert fastpath._InputOnlyPass.keep(signal.bfloat16(), input_grad.bfloat16()) is None
    with torch.enable_grad():  # a backward with create_graph=True
        assert reuse(grad, signal, input_grad) is None


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_check_holds_at_the_ends_of_the_dtypes_range(dtype):
    """Norms of signals near overflow or underflow neither accept nor refuse by accident."""
    info = torch.finfo(dtype)
    signal = torch.tensor([[1.0, -2.0, 0.5]], dtype=dtype)
    input_grad = torch.tensor([[4.0]], dtype=dtype)
    off = torch.tensor([[1.0, 2.0, 0.5]], dtype=dtype)  # no multiple of the signal
    for size in (info.max / 8, info.tiny * 4, info.tiny * info.eps * 4):
        assert reuse(size * off, signal, input_grad) is None
        assert reuse(off, size * signal, input_grad) is None
    for size in (info.max / 8, info.tiny * 4):
        reused = reuse(size * signal, signal, input_grad)
        torch.testing.assert_close(reused, size * input_grad, rtol=4 * info.eps, atol=0)


@torch.no_grad()
def test_a_pass_changed_in_place_since_is_not_reused():
    signal, input_grad = torch.ones(2, 3), torch.ones(2, 4)
    earlier = fastpath._InputOnlyPass.keep(signal, input_grad)
    assert fastpath._loss_signal_scale(2 * signal, earlier) is not None
    input_grad.mul_(2)  # e.g. a caller editing the input gradient it was given
    assert fastpath._loss_signal_scale(2 * signal, earlier) is None


@pytest.mark.parametrize("slope", [0.0, 0.2, -0.3])
def test_activation_twin_saves_its_output_unless_the_slope_is_negative(slope):
    """The output has the input's sign for a slope >= 0: saving it lets the input be freed."""
    pre = torch.randn(6, 4, dtype=torch.float64, requires_grad=True) * 2
    saved = []
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t)
    with hooks, gp.penalty_forward():
        out = F.leaky_relu(pre, slope)
    assert [t.data_ptr() for t in saved] == [(out if slope >= 0 else pre).data_ptr()]
    critic = nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(slope), nn.Linear(8, 1)).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    fast = gp.input_gradient(critic, x)
    slow = plain_input_gradient(critic, x)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-14)
    assert_all_close(
        parameter_gradients(fast.pow(3).sum(), critic),
        parameter_gradients(slow.pow(3).sum(), critic),
    )


def test_in_place_change_of_a_saved_activation_output_raises_with_an_explanation():
    x = torch.randn(4, 3, requires_grad=True)
    with gp.penalty_forward():
        h = F.leaky_relu(x * 2, 0.2)
        h.mul_(1.4)
    with pytest.raises(RuntimeError, match="modified in place after gradpen's penalty_forward"):
        h.sum().backward()
    with gp.penalty_forward():
        h = F.leaky_relu(x * 2, 0.2)
    h.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        h.sum().backward()  # PyTorch's own error passes through unchanged


@pytest.mark.parametrize("name", ["conv2d", "resnet-gn", "group norm and pooling"])
def test_third_order_gradients_equal_plain_autograd(name):
    critic, x = make(name)
    results = []
    for g in (gp.input_gradient(critic, x), plain_input_gradient(critic, x)):
        grads = parameter_gradients(g.pow(2).sum(), critic, create_graph=True)
        meta = sum(grad.pow(2).sum() for grad in grads)
        results.append(parameter_gradients(meta, critic))
    assert_all_close(*results)


def test_third_order_gradients_through_a_reused_forward_equal_plain_autograd():
    """A backward that builds a graph gets the convolution's own, differentiable input gradient."""
    critic, x = make("dcgan")
    results = []
    for mode in (gp.penalty_forward(), torch.enable_grad()):
        real = x.detach().requires_grad_(True)
        with mode:
            scores = critic(real)
        r1 = gp.r1(critic, real, scores=scores)
        objective = scores.pow(2).mean() + 5.0 * r1.mean()
        grads = parameter_gradients(objective, critic, create_graph=True)
        meta = sum(grad.pow(2).sum() for grad in grads)
        results.append(parameter_gradients(meta, critic))
    assert_all_close(*results)


def test_weight_computed_from_the_input_keeps_its_gradient():
    """A convolution whose weight depends on x is left to PyTorch (the twin would drop it)."""
    torch.manual_seed(0)
    base = torch.randn(2, 1, 3, 3, dtype=torch.float64)

    def critic(x: torch.Tensor) -> torch.Tensor:
        weight = base * x.mean()
        return F.conv2d(x, weight).flatten(1).sum(dim=1)

    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(gp.input_gradient(critic, x), plain_input_gradient(critic, x))


def test_gradcheck_of_the_penalty_in_the_weights():
    critic, x = make("conv2d")
    weights = (critic.w1, critic.w2)

    def penalty(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        def functional(inputs: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(critic, {"w1": w1, "w2": w2}, (inputs,))

        return gp.input_gradient(functional, x).pow(2).sum()

    inputs = tuple(w.detach().clone().requires_grad_(True) for w in weights)
    assert torch.autograd.gradcheck(penalty, inputs)
    assert torch.autograd.gradgradcheck(penalty, inputs)


def test_bf16_autocast_matches_pytorchs_autocast_to_bf16_precision():
    critic, x = make("dcgan")
    critic, x = critic.float(), x.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = gp.input_gradient(critic, x)
        slow = plain_input_gradient(critic, x)
    assert fast.dtype == slow.dtype
    scale = slow.abs().max().item()  # the sums run in another order: bf16 rounding differs
    torch.testing.assert_close(fast, slow, rtol=1.6e-2, atol=1e-2 * scale)


@pytest.mark.parametrize(
    "call",
    [
        lambda x, w: F.conv2d(x, w, None, 1, 0, 1, 1, "extra"),
        lambda x, w: F.conv2d(x, w, weight=w),
        lambda x, w: F.conv2d(x, w, paddin=1),
        lambda x, w: F.conv2d(x, w[:, :1]),
    ],
)
def test_a_malformed_convolution_raises_pytorchs_own_error_inside_the_context(call):
    """PyTorch parses the arguments before the mode sees the call; this pins that contract."""
    x, weight = torch.randn(2, 2, 5, 5), nn.Parameter(torch.randn(3, 2, 3, 3))
    with pytest.raises((TypeError, RuntimeError)) as plain:
        call(x, weight)
    with gp.penalty_forward(), pytest.raises(type(plain.value)) as inside:
        call(x, weight)
    assert str(inside.value) == str(plain.value)
