"""Build the documentation site and check it as a reader sees it.

    python scripts/check_site.py --shots shots/        # build, check, screenshot three pages

1. ``mkdocs build --strict`` into a temporary directory (or ``--site DIR``).
2. Every built page: every ``<img>`` points at a file of the site, every internal link at a
   page (and anchor) that exists, and every API entry (mkdocstrings' ``doc-contents``) has text.
   The API pages hold every public name of ``gradpen`` and of its documented modules.
3. In headless Chromium, served over a local HTTP server: the start page, the API page of
   ``Penalty`` and one study page (the results page when there is none yet). A request that gets
   a 404 (a missing image, stylesheet or script) fails the check; each screenshot must show more
   than a blank page. Without Chromium this step is skipped with a message.

Exit status 0 when every check passes, 1 otherwise (the problems are listed).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The modules whose public names (``__all__``) the API reference must show, and their pages.
API_PAGES = {
    "gradpen": "api/gradpen.html",
    "gradpen.augment": "api/augment.html",
    "gradpen.losses": "api/losses.html",
    "gradpen.lipschitz": "api/lipschitz.html",
    "gradpen.robust": "api/robust.html",
    "gradpen.optim": "api/optim.html",
    "gradpen.physics": "api/physics.html",
}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=4000",
    "--window-size=1280,1600",
)


class Page(HTMLParser):
    """What the checks need from one HTML page: ids, links, images and API entries' text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.api_entries: list[tuple[str, str]] = []  # (heading id, text of its doc-contents)
        self._heading = ""
        self._depth = 0  # div depth
        self._contents_at: list[int] = []  # div depths of open doc-contents blocks
        self._texts: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "href" in values:
            self.links.append(values["href"])
        if tag == "img":
            self.images.append(values.get("src", ""))
        classes = values.get("class", "").split()
        if "doc-heading" in classes and "id" in values:
            self._heading = values["id"]
        if tag == "div":
            self._depth += 1
            if "doc-contents" in classes:
                self._contents_at.append(self._depth)
                self._texts.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag != "div":
            return
        if self._contents_at and self._contents_at[-1] == self._depth:
            self._contents_at.pop()
            text = " ".join("".join(self._texts.pop()).split())
            self.api_entries.append((self._heading, text))
            if self._texts:
                self._texts[-1].append(text)
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._texts:
            self._texts[-1].append(data)


@functools.cache
def parse(path: Path) -> Page:
    """The parsed page at ``path``."""
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def resolve(site: Path, page: Path, url: str) -> tuple[Path | None, str]:
    """The file a relative ``url`` on ``page`` points at (None if it is not on the site)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("mailto:", "/")):
        return None, ""
    target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, parts.fragment


def check_pages(site: Path) -> tuple[list[str], list[str]]:
    """Broken images, links and anchors, and empty API entries, on every page of ``site``.

    Returns:
        The problems, and the notes (links to a folder of files: not broken, but no page).
    """
    problems, notes = [], []
    for page_path in sorted(site.rglob("*.html")):
        name = page_path.relative_to(site).as_posix()
        page = parse(page_path)
        for src in page.images:
            target, _ = resolve(site, page_path, src)
            if target is not None and not target.is_file():
                problems.append(f"{name}: image {src!r} is missing")
        for href in page.links:
            target, anchor = resolve(site, page_path, href)
            if target is None:
                continue
            if not target.is_file():
                if target.parent.is_dir() and target.name == "index.html":
                    notes.append(f"{name}: {href!r} is a folder of files, not a page")
                else:
                    problems.append(f"{name}: link {href!r} points at nothing")
            elif anchor and target.suffix == ".html" and anchor not in parse(target).ids:
                problems.append(f"{name}: link {href!r}: no anchor {anchor!r} on that page")
        for heading, text in page.api_entries:
            if not text:
                problems.append(f"{name}: the API entry {heading or '(unnamed)'} is empty")
    return problems, notes


def check_api_names(site: Path) -> list[str]:
    """Every name of each documented module's ``__all__`` that has no entry on its API page."""
    problems = []
    for module_name, page in API_PAGES.items():
        path = site / page
        if not path.is_file():
            problems.append(f"the API page {page} of {module_name} was not built")
            continue
        ids = parse(path).ids
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if f"{module_name}.{name}" not in ids:
                problems.append(f"{page}: no entry for {module_name}.{name}")
    return problems


def build(site: Path) -> list[str]:
    """``mkdocs build --strict`` into ``site``; the problem, if it failed."""
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return [f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"]
    return []


def chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, if one is installed."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def study_page(site: Path) -> str:
    """The site path of the first study page with a figure, or of the results page."""
    studies = sorted((site / "studies").glob("*.html"))
    with_figures = [page for page in studies if parse(page).images]
    chosen = (with_figures or studies or [site / "results.html"])[0]
    return chosen.relative_to(site).as_posix()


class Server(http.server.ThreadingHTTPServer):
    """Serves ``site`` on a free local port and records the paths that got a 404."""

    def __init__(self, site: Path) -> None:
        self.missing: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(site), **kwargs)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None):
                if code == 404:
                    server.missing.append(self.path)
                super().send_error(code, message, explain)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the 404s are collected instead."""

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server_address[1]}/"


def screenshots(site: Path, shots: Path, browser: str) -> Iterator[str]:
    """Screenshot the three pages in headless Chromium; yield the problems seen."""
    server = Server(site)
    base, missing = server.base, server.missing
    pages = {"start": "start.html", "api-penalty": "api/gradpen.html"}
    pages["study"] = study_page(site)
    if not pages["study"].startswith("studies/"):
        print("check_site: no study pages (docs/studies/) yet; screenshotting the results page")
    from PIL import Image

    shots.mkdir(parents=True, exist_ok=True)
    for label, path in pages.items():
        before = len(missing)
        shot = shots / f"{label}.png"
        with tempfile.TemporaryDirectory() as profile:
            command = [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                base + path,
            ]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or not shot.is_file():
            yield f"{path}: Chromium made no screenshot (exit {result.returncode}): {result.stderr}"
            continue
        for request in missing[before:]:
            yield f"{path}: the browser's request for {request} got 404 (missing file)"
        with Image.open(shot) as image:
            colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
        if colors is not None and len(colors) < 16:
            yield f"{path}: the screenshot {shot} is nearly blank ({len(colors)} colors)"
        print(f"check_site: {base + path} -> {shot}")
    server.shutdown()
    server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Run the checks; print the problems; 0 if there are none."""
    parser = argparse.ArgumentParser(description="build the site and check it")
    parser.add_argument("--site", type=Path, help="build into DIR (default: a temporary dir)")
    parser.add_argument("--no-build", action="store_true", help="check the site already in DIR")
    parser.add_argument("--shots", type=Path, help="save the screenshots in DIR")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        site = (args.site or Path(scratch) / "site").resolve()
        problems = [] if args.no_build else build(site)
        if not problems:
            page_problems, notes = check_pages(site)
            problems += page_problems + check_api_names(site)
            for note in notes:
                print(f"check_site: note: {note}")
            browser = chromium()
            if browser is None:
                print("check_site: Chromium is not installed; the browser check is skipped")
            else:
                shots = args.shots or Path(scratch) / "shots"
                problems += list(screenshots(site, shots.resolve(), browser))
    for problem in problems:
        print(f"check_site: PROBLEM: {problem}")
    print(f"check_site: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
