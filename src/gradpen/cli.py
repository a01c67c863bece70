"""The ``gradpen`` command line: demo, study (train, sample, eval arrive with the engine).

Exit status: 0 on success, 2 on a user error (a one-paragraph message, no traceback),
1 on an internal failure (the traceback, so that it can be reported).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from gradpen.errors import UserError


def _demo(args: argparse.Namespace) -> None:
    from gradpen.demo import penalty_table

    print(penalty_table(seed=args.seed))


def _study(args: argparse.Namespace) -> None:
    from gradpen import studies

    if args.name is None:
        print("available studies: " + ", ".join(sorted(studies.available())))
        return
    module = studies.load(args.name)
    out = Path(args.out) if args.out else Path("reports") / args.name
    report = module.run(out, quick=args.quick)
    print(f"report: {report}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gradpen", description="Gradient penalties for GAN critics and beyond."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="a short run on an embedded default; prints a summary")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(handler=_demo)

    study = commands.add_parser("study", help="run an experiment and write its report directory")
    study.add_argument("name", nargs="?", help="study name; omit to list them")
    study.add_argument("--out", help="report directory (default reports/NAME)")
    study.add_argument("--quick", action="store_true", help="a seconds-long smoke version")
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
    except KeyboardInterrupt:
        print(f"gradpen {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"gradpen {args.command}: internal error (the traceback above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
