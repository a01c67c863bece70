"""The ``gradpen`` command line: train, demo, sample, eval, study.

Exit status: 0 on success, 2 on a user error (a one-paragraph message, no traceback),
1 on an internal failure (the traceback, so that it can be reported), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from gradpen.demo import DEMO_STEPS
from gradpen.errors import UserError


def _demo(args: argparse.Namespace) -> None:
    from gradpen.demo import run_demo

    print(run_demo(seed=args.seed, out=args.out, steps=args.steps))


def _print_summary(summary: dict) -> None:
    for key, value in summary.items():
        if key == "plots":
            for path in value:
                print(f"plot: {path}")
        else:
            print(f"{key:>20}: {value:.4f}" if isinstance(value, float) else f"{key:>20}: {value}")


def _train(args: argparse.Namespace) -> None:
    from gradpen.train import train

    trainer, summary = train(args.config, args.set, out=args.out, resume=args.resume)
    if trainer.dist.is_main:  # under torchrun, one rank reports
        _print_summary(summary)
        print(f"run directory: {trainer.run_dir}")


def _sample(args: argparse.Namespace) -> None:
    from gradpen.train import open_run
    from gradpen.train.samples import human_size, write_samples

    if args.n < 1:
        raise UserError(f"-n must be >= 1, got {args.n}")
    path, shape, size = write_samples(open_run(args.run_dir), args.n, Path(args.out))
    print(f"wrote {path} ({human_size(size)}): x {shape}")


def _eval(args: argparse.Namespace) -> None:
    import json

    from gradpen.train import open_run

    overrides = [f"log.inception={json.dumps(args.inception)}"] if args.inception else []
    trainer = open_run(args.run_dir, overrides)
    summary = {"step": trainer.step, **trainer.evaluate()}
    (trainer.run_dir / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary)


def _export(args: argparse.Namespace) -> None:
    from gradpen.export import export_generator

    print(f"wrote {export_generator(args.run_dir, args.out)}")


def _study(args: argparse.Namespace) -> None:
    from gradpen import studies

    if args.name is None:
        print("available studies: " + ", ".join(sorted(studies.available())))
        return
    out = Path(args.out) if args.out else Path("reports") / args.name
    docs = None if args.no_docs else Path(args.docs)
    report = studies.run(args.name, out, quick=args.quick, docs_dir=docs)
    print(f"report: {report}")
    if docs is not None and not args.quick:
        print(f"page: {docs / (args.name + '.md')}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gradpen", description="Gradient penalties for GAN critics and beyond."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a run from a TOML config, or resume one")
    train.add_argument("config", nargs="?", help="TOML recipe (see configs/)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=2000 (repeatable)",
    )
    train.add_argument("--out", help="run directory (default runs/CONFIG-TIMESTAMP)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.set_defaults(handler=_train)

    sample = commands.add_parser("sample", help="draw generator samples from a run into .npz")
    sample.add_argument("run_dir")
    sample.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--out", required=True, help="output .npz file (arrays x, and y)")
    sample.set_defaults(handler=_sample)

    evaluate = commands.add_parser("eval", help="recompute a run's metrics (writes eval.json)")
    evaluate.add_argument("run_dir")
    evaluate.add_argument(
        "--inception",
        metavar="FILE",
        help="a TorchScript Inception (e.g. inception-2015-12-05.pt): adds its FID and KID",
    )
    evaluate.set_defaults(handler=_eval)

    export = commands.add_parser(
        "export", help="write a run's generator (the EMA copy if any) as safetensors"
    )
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="output file, e.g. G.safetensors")
    export.set_defaults(handler=_export)

    demo = commands.add_parser("demo", help="a short run on an embedded default; prints a summary")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--out", help="run directory (default runs/demo, or the next free runs/demo-N)"
    )
    demo.add_argument(
        "--steps",
        type=int,
        default=DEMO_STEPS,
        help=f"generator steps (default {DEMO_STEPS}, about a minute)",
    )
    demo.set_defaults(handler=_demo)

    study = commands.add_parser("study", help="run an experiment and write its report directory")
    study.add_argument("name", nargs="?", help="study name; omit to list them")
    study.add_argument("--out", help="report directory (default reports/NAME)")
    study.add_argument("--quick", action="store_true", help="a seconds-long smoke version")
    study.add_argument(
        "--docs",
        default="docs/studies",
        help="where a full run publishes its page NAME.md and figures (default docs/studies; "
        "--quick never writes there)",
    )
    study.add_argument("--no-docs", action="store_true", help="do not publish the page")
    study.set_defaults(handler=_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except UserError as error:
        print(f"gradpen {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"gradpen {args.command}: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"gradpen {args.command}: internal error (the traceback above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
