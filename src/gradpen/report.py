"""The report directory every study writes: report.md, results.json and PNG figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats are shown with 6 significant digits."""

    def cell(value: object) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(figure: plt.Figure, out_dir: Path, name: str) -> str:
    """Save ``figure`` as out_dir/name (PNG), close it, and return the file name."""
    figure.tight_layout()
    figure.savefig(out_dir / name, dpi=110)
    plt.close(figure)
    return name


def write_report(
    out_dir: Path, title: str, sections: Sequence[str], figures: Sequence[str], results: dict
) -> Path:
    """Write report.md (title, markdown sections, figure links) and results.json; return the md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    links = [f"![{name}]({name})" for name in figures]
    text = "\n\n".join([f"# {title}", *sections, *links]) + "\n"
    report = out_dir / "report.md"
    report.write_text(text)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return report
