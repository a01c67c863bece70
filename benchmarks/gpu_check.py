"""Everything a GPU machine should confirm about gradpen, in one unattended run (<= 5 minutes).

    python benchmarks/gpu_check.py [--out gpu_check.json] [--repeats N]

1. Accuracy: every exact penalty on every zoo critic (and the DCGAN-28 and MLP critics) on
   CUDA in float32 (TF32 off), bf16 autocast and fp16 autocast with the GradScaler recipe
   (``Penalty(scaler=...)``), fast path on and off, against a float64 reference computed on
   the CPU: the term and the gradient with respect to the critic's parameters, as relative
   errors (norm of the difference over norm of the reference). Points are fixed (interpolates
   drawn once on the CPU and passed as both ``real`` and ``fake``, DRAGAN with ``scale=0``), so
   every device and dtype sees the same points.
2. Attention: the ViT critic's loss forward on PyTorch's default SDPA kernel (flash or
   memory-efficient on CUDA, which have no double backward: plain autograd must fail there) and
   gradpen's R1 reusing that forward, which must work (its forward runs on the math kernel).
3. Speed: ``penalty_overhead.bench`` on CUDA for each critic (CUDA events, cudnn.benchmark).

Everything goes into one JSON file. Exit status 0 when every accuracy check is within its
tolerance and the attention check passes, 1 otherwise, 2 without a CUDA GPU. ``--device cpu``
runs the same checks on the CPU as a smoke test of this script (not a GPU check). Not part of CI.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
from penalty_overhead import CRITICS, bench, make_problem
from torch import Tensor, nn

import gradpen as gp

# Relative error allowed against the float64 reference, by precision. The 16-bit bounds catch a
# broken path (NaN, a lost scale, a wrong kernel), not rounding: a CPU smoke run of this script
# saw up to 0.15 (bf16) and 0.25 (fp16) on the parameter gradients of the small critics.
TOLERANCE = {"fp32": 1e-3, "bf16": 0.3, "fp16": 0.4}
EXACT = [name for name, spec in gp.PENALTIES.items() if spec.points and not spec.approximate]
BATCH = 8


def fixed_points(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """The batches each penalty gets: interpolates fixed once, so every run sees the same."""
    x_hat = gp.interpolate(real, fake, generator=torch.Generator().manual_seed(0))
    return {"real": real, "fake": fake, "interpolates": x_hat}


def penalty_inputs(name: str, points: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict]:
    """``(real=, fake=)`` and options for ``name`` that make its points deterministic."""
    spec = gp.PENALTIES[name]
    if "interpolates" in spec.points:  # real == fake == x_hat: every interpolate is x_hat
        x = points["interpolates"]
        return {"real": x, "fake": x}, {}
    options = {"scale": 0.0} if "perturbed" in spec.points else {}
    return {"real": points["real"], "fake": points["fake"]}, options


def term_and_grads(
    critic: nn.Module, name: str, batches: dict[str, Tensor], options: dict, precision: str
) -> tuple[float, Tensor]:
    """The penalty term and its flattened parameter gradient, at ``precision``."""
    device = next(critic.parameters()).device
    scaler = (
        torch.amp.GradScaler(device.type) if precision == "fp16" and device.type == "cuda" else None
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    context = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    penalty = gp.Penalty(name, 10.0, scaler=scaler, fast=options.pop("fast"), **options)
    params = [p for p in critic.parameters() if p.requires_grad]
    with context:
        term = penalty(critic, **batches)
    scaled = scaler.scale(term) if scaler is not None else term
    grads = torch.autograd.grad(scaled, params, allow_unused=True)
    scale = scaler.get_scale() if scaler is not None else 1.0
    flat = torch.cat(
        [
            (torch.zeros_like(p) if g is None else g / scale).flatten()
            for p, g in zip(params, grads, strict=True)
        ]
    )
    return term.item(), flat.double().cpu()


def relative(value: Any, reference: Any) -> float:
    value, reference = torch.as_tensor(value), torch.as_tensor(reference)
    return ((value - reference).norm() / reference.norm().clamp_min(1e-30)).item()


def accuracy_checks(device: torch.device) -> list[dict[str, Any]]:
    """Every exact penalty on every critic, each precision, fast on and off, vs float64 CPU."""
    rows = []
    for critic_name in CRITICS:
        base, real, fake = make_problem(critic_name, BATCH, torch.device("cpu"))
        reference_critic = copy.deepcopy(base).double()
        points = fixed_points(real, fake)
        for name in EXACT:
            spec = gp.PENALTIES[name]
            batches, options = penalty_inputs(name, points)
            cpu64 = {k: v.double() for k, v in batches.items()}
            ref_term, ref_grad = term_and_grads(
                reference_critic, name, cpu64, options | {"fast": False}, "fp32"
            )
            on_device = {k: v.to(device) for k, v in batches.items()}
            for precision in TOLERANCE:
                for fast in (True, False):
                    row: dict[str, Any] = {"critic": critic_name, "penalty": name}
                    row |= {"precision": precision, "fast": fast}
                    try:
                        term, grad = term_and_grads(
                            copy.deepcopy(base).to(device),
                            name,
                            on_device,
                            options | {"fast": fast},
                            precision,
                        )
                        row["term_rel_error"] = relative(term, ref_term)
                        row["grad_rel_error"] = relative(grad, ref_grad)
                        checked = [row["term_rel_error"]]
                        # a batch maximum may pick another sample after 16-bit rounding, so
                        # max-GP's gradient is only compared in float32
                        if precision == "fp32" or spec.batch_reduction != "max":
                            checked.append(row["grad_rel_error"])
                        row["ok"] = max(checked) <= TOLERANCE[precision]
                    except Exception as error:  # recorded, the run goes on
                        row["ok"], row["error"] = False, f"{type(error).__name__}: {error}"
                    rows.append(row)
    return rows


def attention_check(device: torch.device) -> dict[str, Any]:
    """Default-kernel loss forward: plain double backward fails, gradpen's reused R1 works."""
    critic, real, _ = make_problem("vit", BATCH, device)
    dtype = torch.bfloat16
    result: dict[str, Any] = {"dtype": str(dtype)}
    x = real.detach().requires_grad_()
    with torch.autocast(device.type, dtype=dtype):
        scores = critic(x)
    try:
        (g,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
        g.pow(2).sum().backward()
        result["plain_double_backward"] = "ran (this kernel has a double backward)"
    except RuntimeError as error:
        result["plain_double_backward"] = f"fails as expected: {str(error)[:200]}"
    critic.zero_grad()
    x = real.detach().requires_grad_()
    with torch.autocast(device.type, dtype=dtype):
        with gp.penalty_forward():
            reused = critic(x)
        term = gp.Penalty("r1", 10.0)(critic, real=x, real_scores=reused)
    term.backward(inputs=list(critic.parameters()))
    norms = [p.grad.norm().item() for p in critic.parameters() if p.grad is not None]
    result["gradpen_r1"] = term.item()
    result["ok"] = math.isfinite(term.item()) and bool(norms) and all(map(math.isfinite, norms))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per critic")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU is visible to this PyTorch ({torch.__version__}); run it on "
            "a machine with one (and a CUDA build of PyTorch). --device cpu smoke-tests the "
            "script.",
            file=sys.stderr,
        )
        sys.exit(2)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 check compares true float32
    torch.backends.cudnn.allow_tf32 = False
    started = time.perf_counter()
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "tolerance": TOLERANCE,
    }
    report["accuracy"] = accuracy_checks(device)
    report["attention"] = attention_check(device)
    torch.backends.cuda.matmul.allow_tf32 = True  # speed as users run it
    torch.backends.cudnn.allow_tf32 = True
    if not args.no_speed:
        report["speed"] = [bench(name, args.repeats, 3, None, device) for name in CRITICS]
    report["seconds"] = time.perf_counter() - started
    failures = [row for row in report["accuracy"] if not row["ok"]]
    report["ok"] = not failures and report["attention"]["ok"]
    with open(args.out, "w") as file:
        json.dump(report, file, indent=2)
    print(
        f"gpu_check: {len(report['accuracy']) - len(failures)}/{len(report['accuracy'])} accuracy "
        f"checks within tolerance, attention {'ok' if report['attention']['ok'] else 'FAILED'}, "
        f"{report['seconds']:.0f} s; wrote {args.out}"
    )
    for row in failures[:20]:
        print("  failed:", row)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
