"""What every study shares: typed overrides, per-arm settings, aggregation, the report.

A study describes its arms as data: a mapping from the arm's name to its overrides, each a
``{"dotted.key": value}`` dict of Python values (never TOML text), resolved and checked by the
engine's own config loader. ``results.json`` then records, under ``"settings"``, each arm's
fully resolved config (the nested tables of a run's ``config.toml``) or, for a study that does
not train through the engine, the parameters its arm runs with; the tests read them back.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm import tqdm

from gradpen.report import write_report
from gradpen.train.config import Config, from_dict, to_dict

Job = TypeVar("Job", bound=Hashable)
Overrides = Mapping[str, Any]  # {"penalty.weight": 2.0, "data.name": "8gaussians", ...}
Settings = dict[str, dict[str, Any]]  # arm name -> its resolved config (nested tables)


def merge(*layers: Overrides) -> dict[str, Any]:
    """The layers' keys in order, later layers winning: one flat overrides dict."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return merged


def nested(overrides: Overrides) -> dict[str, Any]:
    """``{"a.b": 1, "c": 2}`` as ``{"a": {"b": 1}, "c": 2}`` (the shape of a TOML document).

    Args:
        overrides: dotted keys to values.

    Returns:
        The nested tables.
    """
    raw: dict[str, Any] = {}
    for key, value in overrides.items():
        *tables, leaf = key.split(".")
        node = raw
        for table in tables:
            node = node.setdefault(table, {})
        node[leaf] = value
    return raw


def apply_typed(raw: Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A copy of the nested config ``raw`` with ``overrides`` set (tables merged, not replaced).

    Args:
        raw: nested tables, as read from a TOML recipe.
        overrides: dotted keys to Python values.

    Returns:
        The merged nested tables.
    """

    def deep(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in extra.items():
            both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
            merged[key] = deep(merged[key], value) if both else value
        return merged

    return deep(raw, nested(overrides))


def engine_config(*layers: Overrides) -> Config:
    """The engine's config with ``layers`` of typed overrides applied (later ones win).

    Args:
        layers: dotted-key overrides; unknown keys and wrong types raise ``UserError``.

    Returns:
        The validated, fully resolved config.
    """
    return from_dict(nested(merge(*layers)))


def config_settings(configs: Mapping[str, Config]) -> Settings:
    """Each arm's config as the nested tables of its ``config.toml``."""
    return {arm: to_dict(config) for arm, config in configs.items()}


def sweep_settings(params: Any, arms: Mapping[str, Mapping[str, Any]]) -> Settings:
    """Each arm's settings for a study that does not train through the engine.

    Args:
        params: the study's shared parameters, a dataclass instance or a mapping.
        arms: each arm's own values (what distinguishes it), laid over ``params``.

    Returns:
        ``{arm: params as plain data | the arm's values}``.
    """
    shared = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params)
    return {arm: _plain(shared | dict(own)) for arm, own in arms.items()}


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back: tuples become lists, mappings dicts (recursively)."""
    if isinstance(value, Mapping):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN for none)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std_cell(values: Sequence[float], digits: int = 3) -> str:
    """``"mean ± std"`` for a table cell (just the value for one; an em dash for none)."""
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.{digits}g}" if len(values) == 1 else f"{mean:.{digits}g} ± {std:.2g}"


def _single_threaded(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` with one torch thread, so that worker processes do not oversubscribe."""
    torch.set_num_threads(1)
    return function(*args)


def _job_file(store: Path, key: Hashable) -> Path:
    """Where ``run_jobs`` keeps the result of the job ``key``: ``("gan", 0)`` -> ``gan-0.json``."""
    parts = key if isinstance(key, tuple) else (key,)
    name = "-".join(str(part) for part in parts)
    return store / f"{''.join(c if c.isalnum() or c in '.-_' else '_' for c in name)}.json"


def _finished(store: Path, key: Hashable, arguments: str) -> tuple[bool, Any]:
    """Whether ``store`` holds a result of ``key`` run with ``arguments`` (their repr), and it."""
    path = _job_file(store, key)
    if not path.is_file():
        return False, None
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False, None
    if not isinstance(saved, dict) or saved.get("arguments") != arguments:
        return False, None
    return True, saved["result"]


def _keep(store: Path, key: Hashable, arguments: str, result: Any) -> Any:
    """Write ``result`` of ``key`` into ``store`` (atomically); return it as JSON reads it back."""
    store.mkdir(parents=True, exist_ok=True)
    path = _job_file(store, key)
    text = json.dumps({"arguments": arguments, "result": result}, indent=1)
    partial = path.with_suffix(".json.partial")
    partial.write_text(text)
    partial.replace(path)
    return json.loads(text)["result"]


def run_jobs(
    function: Callable[..., Any],
    jobs: Mapping[Job, tuple[Any, ...]],
    *,
    workers: int,
    desc: str,
    store: Path | None = None,
) -> dict[Job, Any]:
    """``function(*args)`` for every job, ``workers`` at a time in spawned one-thread processes.

    With ``store``, each job's result is written there as JSON the moment it finishes, beside
    the ``repr`` of its arguments, and a later call with the same arguments reuses it instead of
    running the job again: a study killed after some of its runs resumes where it stopped. A job
    whose arguments changed (another config, another output folder) runs again.

    Args:
        function: a module-level (picklable) function; with ``store``, its results must be
            JSON-serializable (they come back as JSON reads them: lists, not tuples).
        jobs: each job's key and its positional arguments.
        workers: how many processes; 1 runs every job in this process, in order.
        desc: the progress bar's label.
        store: the folder of finished jobs' results (None: nothing is kept).

    Returns:
        Each job's key mapped to ``function``'s result.
    """
    done: dict[Job, Any] = {}
    arguments = {key: repr(args) for key, args in jobs.items()}
    if store is not None:
        for key in jobs:
            found, result = _finished(store, key, arguments[key])
            if found:
                done[key] = result
    pending = {key: args for key, args in jobs.items() if key not in done}
    progress = tqdm(total=len(jobs), initial=len(done), desc=desc)
    if done:
        progress.write(f"{desc}: {len(done)} of {len(jobs)} reused from {store}")

    def finish(key: Job, result: Any) -> None:
        done[key] = result if store is None else _keep(store, key, arguments[key], result)
        progress.update(1)

    if workers <= 1:
        for key, args in pending.items():
            finish(key, function(*args))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {
                pool.submit(_single_threaded, function, *args): key for key, args in pending.items()
            }
            for future in as_completed(futures):
                finish(futures[future], future.result())
    progress.close()
    return {key: done[key] for key in jobs}


def report(
    out_dir: Path,
    title: str,
    sections: Sequence[str],
    figures: Sequence[str],
    results: dict[str, Any],
    settings: Settings,
) -> Path:
    """Write the report directory with ``settings`` as the top-level key of ``results.json``.

    Args:
        out_dir: the report directory.
        title: the report's heading.
        sections: markdown paragraphs and tables, in order.
        figures: PNG file names already written into ``out_dir``.
        results: the study's numbers.
        settings: each arm's resolved settings (see the module docstring).

    Returns:
        The path of ``report.md``.
    """
    return write_report(out_dir, title, sections, figures, {"settings": settings, **results})


def publish(report_md: Path, docs_dir: Path, name: str) -> Path:
    """Copy a full run's report into the docs: ``docs_dir/NAME.md`` and its figures beside it.

    Figures go to ``docs_dir/NAME/`` and the page's links are rewritten to point there.

    Args:
        report_md: the ``report.md`` a study wrote.
        docs_dir: the docs folder for study pages (``docs/studies``).
        name: the study's CLI name.

    Returns:
        The path of the written page.
    """
    figures_dir = docs_dir / name
    shutil.rmtree(figures_dir, ignore_errors=True)
    figures = sorted(report_md.parent.glob("*.png"))
    figures_dir.mkdir(parents=True, exist_ok=True)
    text = report_md.read_text()
    for figure in figures:
        shutil.copy2(figure, figures_dir / figure.name)
        text = text.replace(f"]({figure.name})", f"]({name}/{figure.name})")
    banner = (
        f"<!-- generated by `gradpen study {name}`; do not edit by hand. Numbers: "
        f"results.json of that run. -->\n"
    )
    page = docs_dir / f"{name}.md"
    page.write_text(banner + text)
    return page
