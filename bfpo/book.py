"""The book: a static HTML site of a profile's executed notebooks, to read without running anything.

    make reproduce && make book                       # the smoke profile
    python -m bfpo.book --profile cpu                 # after `python -m bfpo.notebooks --profile cpu`

Sphinx with myst-nb renders the executed copies in ``runs/<profile>/notebooks/`` as they are
(nothing is executed again, so the figures stay the committed ones, inline as the notebooks show
them); the README is the front page, each page of ``docs/`` a page, and the profile's ``RESULTS.md``
a page of its own. Progress bars (stderr) are left out, and the building machine's paths (papermill's
injected parameters) are written relative to the checkout. The math renders without network or script: every
formula is pre-rendered to MathML (``latex2mathml``), which Chromium and Firefox draw natively; no page
loads MathJax (whose re-reading of MathML as XML broke on a no-break space). Long code lines wrap, and
wide outputs and tables scroll inside their block (the book's ``bfpo.css``). Any
Sphinx warning, a broken internal link included, fails the build. The site goes to
``runs/<profile>/book/html/index.html``; after building, :func:`check` reads every page: each
notebook and docs page has one, none holds an error output, every image a page references exists,
every formula is MathML with no no-break space, no page loads MathJax, and no page shows the building
machine's checkout path. :mod:`bfpo.book_check` then reads every page in headless Chromium.
"""

from __future__ import annotations

import argparse
import html as html_text
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
exclude_patterns = ["_build", "_bfpo_static", "figures/**", "results_figures/**"]  # figure captions are not pages
suppress_warnings = ["myst.header", "misc.highlighting_failure"]
# Math: bfpo.book.render_math turns every formula into MathML after the build, which browsers draw natively
# (Chromium and Firefox), so no page loads MathJax: a renderer that writes Sphinx's math spans and no script
html_math_renderer = "mathml"
# long code lines wrap and wide outputs scroll inside their block, instead of being cut off at the column's edge
html_static_path = ["_bfpo_static"]
html_css_files = ["bfpo.css"]


def setup(app):
    from sphinx.ext import mathjax

    app.add_html_math_renderer("mathml", (mathjax.html_visit_math, None), (mathjax.html_visit_displaymath, None))
"""

CSS = """/* written by bfpo.book: long code lines wrap; wider outputs and tables scroll in their block */
div.highlight pre { white-space: pre-wrap; overflow-wrap: anywhere; }
div.cell_output pre, div.output pre { overflow-x: auto; }
div.cell_output, div.output { overflow-x: auto; max-width: 100%; }
div.cell_output table, div.output table { display: block; overflow-x: auto; max-width: 100%; }
div.math { overflow-x: auto; overflow-y: hidden; max-width: 100%; }
/* scrollbars drawn, not overlaid: a wide formula or output shows that it scrolls */
::-webkit-scrollbar { height: 8px; width: 8px; }
::-webkit-scrollbar-thumb { background: #b8b8b8; border-radius: 4px; }
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
    (src / "_bfpo_static").mkdir()
    (src / "_bfpo_static" / "bfpo.css").write_text(CSS, encoding="utf-8")
    for nb in notebooks:
        (src / nb.name).write_text(_relative(nb.read_text(encoding="utf-8")), encoding="utf-8")
    shutil.copytree(project_path("docs"), src / "docs")
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
    toc += TOC.format(caption="Read on", entries="\n".join(f"docs/{d}" for d in docs_pages()))
    (src / "index.md").write_text(readme + toc, encoding="utf-8")
    return pages


def docs_pages() -> list[str]:
    """The pages of ``docs/`` (names without .md), in the order of the README's table."""
    readme = project_path("README.md").read_text(encoding="utf-8")
    linked = re.findall(r"\]\(docs/([\w-]+)\.md\)", readme)
    present = sorted(p.stem for p in project_path("docs").glob("*.md"))
    return list(dict.fromkeys([p for p in linked if p in present] + present))


def _relative(text: str) -> str:
    """A notebook's text with the checkout's absolute path written as the checkout's own root (``.``)."""
    root = str(project_path("."))
    return text.replace(root + "/", "").replace(root, ".")


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
    # -W --keep-going: every warning (a broken internal link too) fails the build, after all are shown
    args = ["-b", "html", "-j", "auto", "-W", "--keep-going", *(["-q"] if quiet else []), str(book / "src"), str(html)]
    if build_main(args) != 0:
        raise RuntimeError(f"sphinx could not build the book of {runs_dir}; see its messages above")
    render_math(html)
    problems = check(html, pages + [f"docs/{d}" for d in docs_pages()])
    if problems:
        raise RuntimeError(f"{html}: " + "; ".join(problems))
    return html


MATH = re.compile(r'<(span|div) class="math notranslate nohighlight"([^>]*)>(.*?)</\1>', re.S)
"""A formula as Sphinx writes it for MathJax: ``\\(...\\)`` inline in a span, ``\\[...\\]`` in a div."""
UNKNOWN = re.compile(r">\\[A-Za-z]+<")
RENDERED = re.compile(r'<(span|div) class="math(?: [^"]*)?"[^>]*>(.*?)</\1>', re.S)


def _tex(source: str) -> str:
    tex = html_text.unescape(source).strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$")):
        if tex.startswith(left) and tex.endswith(right):
            return tex[len(left) : -len(right)].strip()
    return tex


NO_BREAK_SPACES = ("\u00a0", "&nbsp;", "&#160;", "&#xa0;", "&#x000a0;", "&#x0a0;")
"""A no-break space in a formula, as a character or an entity: a MathML reader that re-parses the markup as
XML (MathJax 2 did) knows no ``&nbsp;`` and shows an error box instead of the formula."""


def _normalise(mathml: str) -> str:
    """The converter's MathML with every no-break space (TeX's ``~``, ``\\ `` and the spaces of ``\\text``) written
    as ``&#x2004;``, a three-per-em space: the width of TeX's interword space, a numeric reference that every XML and
    HTML reader knows, and not trimmed at the ends of ``<mtext>`` as a plain space would be."""
    for nbsp in NO_BREAK_SPACES:
        mathml = re.sub(re.escape(nbsp), "&#x2004;", mathml, flags=re.I)
    return mathml


def render_math(html: str | Path) -> int:
    """Replace every formula of the site's pages with its MathML (``latex2mathml``), so that a browser shows
    it without running any script; returns how many were rendered. A formula that cannot be converted is
    left as TeX, and :func:`check` names it. No-break spaces become plain spaces (:func:`_normalise`)."""
    from latex2mathml.converter import convert

    rendered = 0

    def mathml(match: re.Match) -> str:
        nonlocal rendered
        tag, attrs, source = match.groups()
        try:
            out = convert(_tex(source), display="block" if tag == "div" else "inline")
        except Exception:  # noqa: BLE001 - any converter failure leaves the TeX, which check() reports
            return match.group(0)
        if UNKNOWN.search(out):  # a command the converter does not know, passed through as text
            return match.group(0)
        out = _normalise(out)
        rendered += 1
        return f'<{tag} class="math"{attrs}>{out}</{tag}>'

    for path in Path(html).rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        new = MATH.sub(mathml, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
    return rendered


class _Page(HTMLParser):
    """The images a page references and the error outputs it shows."""

    def __init__(self):
        super().__init__()
        self.images, self.errors, self.scripts, self.math = [], 0, [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if "math" in (attrs.get("class") or "").split():
            self.math += 1
        classes = (attrs.get("class") or "").split()
        if "output" in classes and ("traceback" in classes or "error" in classes):
            self.errors += 1


def check(html: str | Path, pages: list[str]) -> list[str]:
    """What is wrong with a built site: a notebook or docs page without a page, a page holding an
    error output, an image reference to a file that is not there, a formula not rendered to MathML or
    holding a no-break space, a page that loads MathJax, the building machine's checkout
    path. Empty when all is well."""
    html = Path(html)
    root = str(project_path("."))
    problems = []
    for page in pages:
        if not (html / f"{page}.html").is_file():
            problems.append(f"no page for the notebook {page}" if "/" not in page else f"no page for {page}.md")
    for path in sorted(html.rglob("*.html")):
        parser = _Page()
        text = path.read_text(encoding="utf-8")
        parser.feed(text)
        rel = path.relative_to(html)
        if parser.errors:
            problems.append(f"{rel} shows {parser.errors} error output(s)")
        mathjax = [s for s in parser.scripts if "mathjax" in s.lower()]
        if mathjax:
            problems.append(f"{rel} loads MathJax ({mathjax[0]}): the book's formulas are MathML, drawn natively")
        formulas = [m.group(2) for m in RENDERED.finditer(text)]
        tex = [_tex(f)[:60] for f in formulas if "<math" not in f]
        if tex:
            problems.append(f"{rel} shows {len(tex)} formula(s) not rendered to MathML, the first {tex[0]!r}")
        spaced = [f for f in formulas if any(n in f.lower() for n in NO_BREAK_SPACES)]
        if spaced:
            problems.append(
                f"{rel} has {len(spaced)} formula(s) holding a no-break space, the first "
                f"{html_text.unescape(re.sub('<[^>]+>', ' ', spaced[0])).split()[:8]}"
            )
        if root in text:
            problems.append(f"{rel} shows the building machine's path {root}")
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
