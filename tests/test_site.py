"""The documentation site: its API pages cover the public API, its references match the code,
its nav holds the study pages that exist, and the built site passes scripts/check_site.py
(strict build, images, links, API entries; in headless Chromium where it is installed)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import re
import shutil
from pathlib import Path

import pytest

from gradpen import cli
from gradpen.train import config
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


check_site = load_script("scripts/check_site.py")
hooks = load_script("scripts/mkdocs_hooks.py")


def documented_names(module_name: str) -> set[str]:
    """The names a ``::: module.NAME`` directive of its API page documents (the module itself
    documents its whole ``__all__``)."""
    page = (DOCS / check_site.API_PAGES[module_name]).with_suffix(".md").read_text()
    targets = re.findall(r"^::: ([\w.]+)", page, flags=re.MULTILINE)
    module = importlib.import_module(module_name)
    if module_name in targets:
        return set(module.__all__)
    prefix = f"{module_name}."
    return {target.removeprefix(prefix) for target in targets if target.startswith(prefix)}


@pytest.mark.parametrize("module_name", sorted(check_site.API_PAGES))
def test_every_public_name_is_on_its_api_page(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = set(module.__all__) - documented_names(module_name)
    assert not missing, f"add to docs/{check_site.API_PAGES[module_name]}: {sorted(missing)}"


def public_callables() -> list[tuple[str, object]]:
    """Every public function, class and method of the documented modules."""
    found = []
    for module_name in check_site.API_PAGES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj):
                continue
            found.append((f"{module_name}.{name}", obj))
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if not member.startswith("_") and inspect.isfunction(value):
                        found.append((f"{module_name}.{name}.{member}", value))
    return found


def test_public_docstrings_have_args_and_returns() -> None:
    """Google-style sections: Args (Attributes for a dataclass) when there are parameters,
    Returns (or Yields) when something is returned."""
    problems = []
    for name, obj in public_callables():
        doc = inspect.getdoc(obj) or ""
        if not doc:
            problems.append(f"{name}: no docstring")
            continue
        try:
            signature = inspect.signature(obj)
        except ValueError:  # an exception class with the builtin constructor
            continue
        parameters = [p for p in signature.parameters if p not in ("self", "cls")]
        sections = ("Args:", "Attributes:") if dataclasses.is_dataclass(obj) else ("Args:",)
        if parameters and not any(section in doc for section in sections):
            problems.append(f"{name}: no Args section")
        returned = signature.return_annotation
        returns_something = returned not in (None, "None", inspect.Signature.empty)
        documented = "Returns:" in doc or "Yields:" in doc
        if not inspect.isclass(obj) and returns_something and not documented:
            problems.append(f"{name}: no Returns section")
    assert not problems, "\n".join(problems)


def test_config_reference_lists_every_key() -> None:
    page = (DOCS / "config.md").read_text()
    sections = {"data": config.DataConfig, "train": config.TrainConfig}
    sections |= {"penalty": config.PenaltyConfig, "log": config.LogConfig}
    sections["generator"] = config.NetConfig
    missing = []
    for section, cls in sections.items():
        heading = f"## `[{section}]`" if section != "generator" else "## `[generator]`"
        body = page.split(heading, 1)[1].split("\n## ", 1)[0]
        missing += [
            f"{section}.{field.name}"
            for field in dataclasses.fields(cls)
            if f"`{field.name}`" not in body
        ]
    assert not missing, f"docs/config.md lacks {missing}"


def test_cli_reference_lists_every_command_and_option() -> None:
    page = (DOCS / "cli.md").read_text()
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = []
    for name, subparser in commands.items():
        if f"gradpen {name}" not in page:
            missing.append(name)
        for action in subparser._actions:
            missing += [f"{name} {flag}" for flag in action.option_strings if flag not in page]
    missing = [item for item in missing if not item.endswith(("-h", "--help"))]
    assert not missing, f"docs/cli.md lacks {missing}"


def test_nav_lists_every_page_and_the_study_pages_that_exist(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "studies").mkdir(parents=True)
    for page in ("index.md", "results.md", "recipes.md", "studies/lambda.md", "studies/dirac.md"):
        (docs / page).write_text(f"# {page}\n")
    (docs / "studies" / "index.md").write_text("# Studies\n")
    nav = [{"Home": "index.md"}, {"Results": "results.md"}]
    hooks.on_config({"docs_dir": str(docs), "nav": nav})
    studies = ["studies/index.md", "studies/dirac.md", "studies/lambda.md"]
    assert nav == [
        {"Home": "index.md"},
        "recipes.md",
        {"Studies": studies},
        {"Results": "results.md"},
    ]

    shutil.rmtree(docs / "studies")  # no study pages: no section, nothing to break the build
    nav = [{"Home": "index.md"}, {"More": ["recipes.md"]}, {"Results": "results.md"}]
    hooks.on_config({"docs_dir": str(docs), "nav": nav})
    assert nav == [{"Home": "index.md"}, {"More": ["recipes.md"]}, {"Results": "results.md"}]


def test_check_site_finds_missing_images_broken_links_and_empty_api_entries(
    tmp_path: Path,
) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "ok.html").write_text('<h1 id="top">ok</h1><img src="api/fig.png">')
    (tmp_path / "api" / "fig.png").write_bytes(b"png")
    (tmp_path / "page.html").write_text(
        '<img src="missing.png"><a href="nowhere.html">x</a><a href="ok.html#top">ok</a>'
        '<a href="ok.html#gone">x</a><a href="https://example.org">external</a>'
        '<div class="doc doc-object"><h2 id="gradpen.x" class="doc doc-heading">x</h2>'
        '<div class="doc doc-contents"><div class="doc doc-children"> </div></div></div>'
        '<h2 id="gradpen.y" class="doc doc-heading">y</h2>'
        '<div class="doc doc-contents"><p>A docstring.</p></div>'
    )
    problems, _ = check_site.check_pages(tmp_path)
    assert problems == [
        "page.html: image 'missing.png' is missing",
        "page.html: link 'nowhere.html' points at nothing",
        "page.html: link 'ok.html#gone': no anchor 'gone' on that page",
        "page.html: the API entry gradpen.x is empty",
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built strictly once for the tests below."""
    pytest.importorskip(
        "mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'"
    )
    directory = tmp_path_factory.mktemp("site") / "site"
    problems = check_site.build(directory)
    assert not problems, problems[0]
    return directory


def test_built_site_has_no_broken_image_link_or_empty_api_entry(site: Path) -> None:
    problems, _ = check_site.check_pages(site)
    assert not problems + check_site.check_api_names(site)


def test_site_in_headless_chromium(site: Path, tmp_path: Path) -> None:
    browser = check_site.chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): browser check skipped")
    problems = list(check_site.screenshots(site, tmp_path, browser))
    assert not problems
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "api-penalty.png",
        "start.png",
        "study.png",
    ]
