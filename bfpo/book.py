"""The book: a static HTML site of a profile's executed notebooks, to read without running anything.

    make reproduce && make book                       # the smoke profile
    python -m bfpo.book --profile cpu                 # after `python -m bfpo.notebooks --profile cpu`

Sphinx with myst-nb renders the executed copies in ``runs/<profile>/notebooks/`` as they are
(nothing is executed again, so the figures stay the committed ones, inline as the notebooks show
them); the README is the front page and the profile's ``RESULTS.md`` a page of its own. Progress
bars (stderr) are left out. The site goes to ``runs/<profile>/book/html/index.html``; after
building, :func:`check` reads every page: each notebook has one, none holds an error output, and
every image a page references exists.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

from bfpo.errors import BadInput, run_cli
from bfpo.io import project_path
from bfpo.notebooks import FIGURES, PROFILES

CONF = """# written by bfpo.book: the book of the {profile} profile
project = "bfpo: Bi-Factorial Preference Optimization, runnable ({profile} profile)"
extensions = ["myst_nb"]
nb_execution_mode = "off"  # the notebooks ran under papermill; rendered as they are
nb_output_stderr = "remove"  # progress bars
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_theme_options = {{"page_width": "1100px", "sidebar_width": "260px"}}
html_title = "bfpo ({profile})"
exclude_patterns = ["_build", "figures/**", "results_figures/**"]  # figure captions are not pages
suppress_warnings = ["myst.xref_missing", "myst.header", "misc.highlighting_failure"]
"""

TOC = """

```{{toctree}}
:maxdepth: 1
:caption: {caption}

{entries}
```
"""


def stage(profile: str, runs_dir: Path, src: Path, figures_dir: Path) -> list[str]:
    """Lay out the book's sources in ``src``: conf.py, index.md (the README and the table of
    contents), results.md, the figures the pages refer to, and the executed notebooks. Returns the
    notebook page names."""
    notebooks = sorted((runs_dir / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise BadInput(
            f"{runs_dir / 'notebooks'}: no executed notebooks; run `python -m bfpo.notebooks --profile {profile}` first"
        )
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (src / "conf.py").write_text(CONF.format(profile=profile), encoding="utf-8")
    for nb in notebooks:
        shutil.copy2(nb, src / nb.name)
    shutil.copytree(project_path("figures"), src / "figures")  # what the README shows, by its own paths
    results = figures_dir / "RESULTS.md"
    pages = [nb.stem for nb in notebooks]
    entries = pages
    if results.is_file():
        text = results.read_text(encoding="utf-8")
        # RESULTS.md sits beside its figures: its image paths are relative to that folder
        shutil.copytree(figures_dir, src / "results_figures")
        text = re.sub(r"\]\((?!https?:|/|#)([^)]+)\)", lambda m: f"](results_figures/{m.group(1)})", text)
        (src / "results.md").write_text(text, encoding="utf-8")
        entries = ["results", *pages]
    readme = project_path("README.md").read_text(encoding="utf-8")
    toc = TOC.format(caption=f"The {profile} profile", entries="\n".join(entries))
    (src / "index.md").write_text(readme + toc, encoding="utf-8")
    return pages


def build(
    profile: str = "smoke",
    runs_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    quiet: bool = True,
) -> Path:
    """Build the book of ``profile`` from ``runs_dir`` (default ``runs/<profile>``) and the results
    summary in ``figures_dir`` (default: the profile's, e.g. ``figures/``), and check it; returns
    the site's folder. A check that fails raises with every problem found."""
    from sphinx.cmd.build import build_main

    runs_dir = project_path(runs_dir or f"runs/{profile}")
    book = runs_dir / "book"
    figures_dir = project_path(figures_dir or FIGURES[profile])
    pages = stage(profile, runs_dir, book / "src", figures_dir)
    html = book / "html"
    shutil.rmtree(html, ignore_errors=True)
    args = ["-b", "html", "-j", "auto", *(["-q"] if quiet else []), str(book / "src"), str(html)]
    if build_main(args) != 0:
        raise RuntimeError(f"sphinx could not build the book of {runs_dir}; see its messages above")
    problems = check(html, pages)
    if problems:
        raise RuntimeError(f"{html}: " + "; ".join(problems))
    return html


class _Page(HTMLParser):
    """The images a page references and the error outputs it shows."""

    def __init__(self):
        super().__init__()
        self.images, self.errors = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        classes = (attrs.get("class") or "").split()
        if "output" in classes and ("traceback" in classes or "error" in classes):
            self.errors += 1


def check(html: str | Path, pages: list[str]) -> list[str]:
    """What is wrong with a built site: a notebook without a page, a page holding an error output,
    an image reference to a file that is not there. Empty when all is well."""
    html = Path(html)
    problems = []
    for page in pages:
        if not (html / f"{page}.html").is_file():
            problems.append(f"no page for the notebook {page}")
    for path in sorted(html.rglob("*.html")):
        parser = _Page()
        parser.feed(path.read_text(encoding="utf-8"))
        rel = path.relative_to(html)
        if parser.errors:
            problems.append(f"{rel} shows {parser.errors} error output(s)")
        for src in parser.images:
            if src.startswith(("http:", "https:", "data:")):
                continue
            if not (path.parent / src.split("#")[0].split("?")[0]).is_file():
                problems.append(f"{rel} references the missing image {src}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bfpo.book",
        description="Build the static HTML book of a profile's executed notebooks (run them first with "
        "`python -m bfpo.notebooks --profile P`), with the README as front page and RESULTS.md as a page; "
        "then check it (a page per notebook, no error output, no missing image).",
    )
    parser.add_argument("--profile", choices=PROFILES, default="smoke")
    parser.add_argument("--runs-dir", help="where the run wrote its executed notebooks (default runs/<profile>)")
    parser.add_argument("--figures-dir", help="where the profile's run wrote RESULTS.md (default: the profile's)")
    parser.add_argument("--verbose", action="store_true", help="show sphinx's messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)

    def work():
        html = build(args.profile, args.runs_dir, args.figures_dir, quiet=not args.verbose)
        print(f"book: {html / 'index.html'}")

    return run_cli("bfpo.book", work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
