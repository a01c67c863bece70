"""The benchmark scripts that take apart the fast path switch what they say they switch."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

import gradpen as gp
from gradpen.fastpath import twin_kind
from repo_scripts import ROOT, load_script

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import each other by module name
parts = load_script("benchmarks/fast_path_parts.py")


def _node_kinds(critic: object = None) -> set[str | None]:
    """The twin kinds of a tiny conv + leaky ReLU forward under the penalty's fast path."""
    x = torch.randn(2, 1, 6, 6, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(4, 1, 3, 3))
    with gp.penalty_forward(True, critic=critic):
        h = F.leaky_relu(F.conv2d(x, weight), 0.2)
    kinds = set()
    node = h.grad_fn
    while node is not None:
        kinds.add(twin_kind(node))
        node = node.next_functions[0][0] if node.next_functions else None
    return kinds


def test_each_variant_switches_off_its_part_and_restores_it() -> None:
    assert _node_kinds() >= {"conv", "leaky ReLU"}
    with parts.switched(True, parts._without_activations, None, None):
        kinds = _node_kinds()
        assert "conv" in kinds and "leaky ReLU" not in kinds
    with parts.switched(True, parts._without_convolutions, None, None):
        kinds = _node_kinds()
        assert "leaky ReLU" in kinds and "conv" not in kinds
    with parts.switched(True, parts._no_twin, None, None):
        assert _node_kinds() == {None}
    with parts.switched(True, None, None, None, None, None, 10**9):  # every conv below it
        kinds = _node_kinds()
        assert "leaky ReLU" in kinds and "conv" not in kinds
    assert parts.fastpath.SMALL_CONV_MACS == 0  # conftest's, back
    # A critic the fast path steps aside for gets the twins only when they are forced.
    judged = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.LayerNorm([2, 4, 4]))
    gp.input_gradient(judged, torch.randn(2, 1, 6, 6)).sum().backward()
    assert _node_kinds(judged) == {None}
    with parts.switched(True, None, None, None):
        assert _node_kinds(judged) >= {"conv", "leaky ReLU"}
    signal = torch.ones(2, 3)
    earlier = parts.fastpath._InputOnlyPass.keep(signal, torch.ones(2, 4))
    with parts.switched(
        False, None, parts._never_fold, parts._never_reuse, None, parts._never_hand_over
    ):
        assert parts.fastpath._leave_weight_grad_to_loss is parts._never_hand_over
        geometry = parts.fastpath._ConvGeometry(2, (1, 1), (0, 0), (1, 1), 1)
        assert not geometry._folds_input_grad(torch.empty(4, 1, 3, 3), torch.empty(2, 4, 6, 6))
        with torch.no_grad():
            assert parts.fastpath._loss_signal_scale(2 * signal, earlier) is None
    assert _node_kinds() >= {"conv", "leaky ReLU"}
    geometry = parts.fastpath._ConvGeometry(2, (1, 1), (0, 0), (1, 1), 1)
    # the original rules are back
    assert parts.fastpath._leave_weight_grad_to_loss is parts._HANDOVER
    assert geometry._folds_input_grad(torch.empty(4, 1, 3, 3), torch.empty(2, 4, 6, 6))
    with torch.no_grad():
        assert parts.fastpath._loss_signal_scale(2 * signal, earlier) is not None


def _norm_pool_kinds() -> set[str | None]:
    """The twin kinds of a tiny group norm + 2x2 average pooling under the fast path."""
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    with gp.penalty_forward(True):
        y = F.avg_pool2d(F.group_norm(x, 2), 2)
    return {twin_kind(node) for node in gp.gradients.graph_nodes(y)}


def test_norm_and_pool_variants_switch_off_their_part_and_restore_it() -> None:
    assert _norm_pool_kinds() >= {"group norm", "average pool"}
    with parts.switched(True, parts._without_group_norm, None, None):
        assert "group norm" not in _norm_pool_kinds() and "average pool" in _norm_pool_kinds()
    with parts.switched(True, parts._without_pooling, None, None):
        assert "group norm" in _norm_pool_kinds() and "average pool" not in _norm_pool_kinds()
    geometry = parts.fastpath._PoolGeometry(2, (2, [], 0, False, True, None))
    with parts.switched(True, None, None, None, parts._never_slice):
        assert not geometry._by_slices(torch.empty(1, 1, 4, 4))
    assert geometry._by_slices(torch.empty(1, 1, 4, 4))  # the original rule is back
    assert _norm_pool_kinds() >= {"group norm", "average pool"}


def test_bench_reports_every_variant_as_a_positive_ratio() -> None:
    ratios = parts.bench("mlp", repeats=1)
    assert set(ratios) == set(parts.VARIANTS)
    assert all(math.isfinite(r) and r > 0 for r in ratios.values())


sizes = load_script("benchmarks/fast_path_sizes.py")


def test_sizes_benchmark_critics_keep_the_twins_with_and_without_group_norm() -> None:
    for norm in (False, True):
        critic = sizes.block_critic(4, norm)
        gp.input_gradient(critic, torch.randn(2, 4, 8, 8)).sum().backward()
        assert gp.gradients.twins_pay(critic)
        assert norm == any(isinstance(m, torch.nn.GroupNorm) for m in critic)
    # 8 x 8 x 8 x 16 per output pixel, 9 x 9 output pixels: (16 + 4 - 4) // 2 + 1 = 9
    assert sizes.first_conv_macs(8, 16, 8) == 8 * 8 * 8 * 16 * 81
    assert sizes.block_critic(8, False)[0](torch.randn(1, 8, 16, 16)).shape[-1] == 9


def test_sizes_benchmark_forces_the_twins_and_restores_the_rules(monkeypatch) -> None:
    calls = []
    for twin in (gp.fastpath._PiecewiseLinear, gp.fastpath._Convolution):
        original = twin.apply
        monkeypatch.setattr(
            twin, "apply", lambda *a, _f=original, _n=twin.__name__: calls.append(_n) or _f(*a)
        )
    monkeypatch.setattr(gp.fastpath, "SMALL_CONV_MACS", 10**9)  # above every conv here
    verdict = gp.gradients.twins_pay
    # Forced (whatever the verdict and the size rule), every step of the fast configuration
    # (1 timed + WARMUP) runs both leaky ReLUs and all three convolutions as twins.
    assert math.isfinite(sizes.ratio(4, 8, 2, True, repeats=1))
    assert calls.count("_PiecewiseLinear") == 2 * (1 + sizes.WARMUP)
    assert calls.count("_Convolution") == 3 * (1 + sizes.WARMUP)
    assert gp.gradients.twins_pay is verdict and gp.fastpath.SMALL_CONV_MACS == 10**9


def test_every_benchmark_critic_scores_its_own_data() -> None:
    for name in parts.CRITICS:
        critic, real, fake = parts.make_problem(name, 2, torch.device("cpu"))
        assert real.shape == fake.shape and real.shape[0] == 2
        assert gp.Penalty("wgan-gp", 10.0)(critic, real=real, fake=fake).isfinite()


anatomy = load_script("benchmarks/step_anatomy.py")


def test_anatomy_prices_shared_kernels_at_the_plain_steps_speed() -> None:
    plain = {("conv", "[a]", ""): (2, 20.0), ("relu", "[a]", ""): (2, 4.0)}
    penalized = {("conv", "[a]", ""): (3, 45.0), ("bmm", "[b]", ""): (1, 7.0)}
    assert anatomy.reprice(plain, penalized) == 3 * 10.0 + 7.0
    # one conv call more at 10 us, a bmm of its own, the ReLUs gone
    assert anatomy.extra_work(("conv", "[a]", ""), plain, penalized) == 10.0
    assert anatomy.extra_work(("bmm", "[b]", ""), plain, penalized) == 7.0
    assert anatomy.extra_work(("relu", "[a]", ""), plain, penalized) == -4.0


def test_anatomy_tells_a_convolutions_backward_passes_apart() -> None:
    x, weight = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    grad = torch.randn(2, 4, 4, 4)

    def backward(mask: list[bool]) -> None:
        conv_backward = torch.ops.aten.convolution_backward
        conv_backward(grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)

    with torch.profiler.profile(record_shapes=True) as prof:
        backward([True, False, False])
        backward([False, True, False])
    keys = {
        anatomy._key(event) for event in prof.events() if event.name == "aten::convolution_backward"
    }
    assert len(keys) == 2


def test_anatomy_reports_finite_ratios_and_prices_the_extra_work_above_one() -> None:
    result = anatomy.anatomy("mlp", "gradpen wgan-gp", repeats=1)
    # measured is one timed round of each (it fell below 1 once on a busy machine); priced at
    # the plain step's speed, the penalized step's extra calls always add time
    assert math.isfinite(result["measured"]) and result["measured"] > 0
    assert result["at_plain_speed"] > 1
    assert all(calls > 0 for calls, _ in result["penalized"].values())


overhead = load_script("benchmarks/penalty_overhead.py")


def test_ratio_interval_of_a_constant_ratio_is_that_ratio() -> None:
    """Every round's pair in the same ratio: each resample's medians keep it exactly."""
    plain = [0.9, 1.3, 1.0, 2.2, 1.1]
    low, high = overhead.ratio_interval([2 * t for t in plain], plain)
    assert (low, high) == (2.0, 2.0)


def test_ratio_interval_by_hand_on_two_rounds() -> None:
    """Two rounds of ratio 1 and 3: a resample holds round 0 twice (ratio 1, chance 1/4), round
    1 twice (3, 1/4) or both (the median 2, 1/2); the 2.5% and 97.5% quantiles are 1 and 3."""
    assert overhead.ratio_interval([1.0, 3.0], [1.0, 1.0]) == (1.0, 3.0)


def test_ratio_interval_holds_the_ratio_and_widens_with_the_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    plain = (1 + 0.05 * torch.rand(40, generator=generator)).tolist()
    noise = torch.rand(40, generator=generator)
    quiet = [2 * t + 0.02 * n for t, n in zip(plain, noise.tolist(), strict=True)]
    loud = [2 * t + 0.6 * n for t, n in zip(plain, noise.tolist(), strict=True)]
    for penalized in (quiet, loud):
        ratio = sorted(penalized)[19:21]  # the median of 40: the mean of the middle two
        low, high = overhead.ratio_interval(penalized, plain)
        median_ratio = (ratio[0] + ratio[1]) / 2 / ((sorted(plain)[19] + sorted(plain)[20]) / 2)
        assert low <= median_ratio <= high
    quiet_low, quiet_high = overhead.ratio_interval(quiet, plain)
    loud_low, loud_high = overhead.ratio_interval(loud, plain)
    assert loud_high - loud_low > 3 * (quiet_high - quiet_low)


def test_ratio_interval_refuses_rounds_that_do_not_pair() -> None:
    with pytest.raises(ValueError, match="one time per round"):
        overhead.ratio_interval([1.0, 2.0], [1.0])


def test_the_table_prints_each_ratio_with_its_interval_and_the_fast_path_pairs(capsys) -> None:
    row = {"peak_memory_ratio": 1.0, "peak_mib": 10.0, "page_faults_per_step": 0, "error": None}
    result = {
        "critic": "toy",
        "device": "cpu",
        "batch": 4,
        "repeats": 2,
        "plain_noise_iqr_over_median": 0.1,
        "rows": [
            row | {"config": "plain", "time_ratio": 1.0, "time_ratio_95": (1.0, 1.0)},
            row | {"config": "gradpen wgan-gp", "time_ratio": 1.7, "time_ratio_95": (1.6, 1.8)},
        ],
        "fast_over_fast_off": [
            {"config": "gradpen wgan-gp", "ratio": 0.85, "ratio_95": (0.8, 0.9)},
        ],
        "accuracy": None,
    }
    overhead.print_table(result)
    printed = capsys.readouterr().out
    assert "1.70 (1.60-1.80)" in printed
    assert "gradpen wgan-gp / its fast-off row: 0.85 (0.80-0.90)" in printed
