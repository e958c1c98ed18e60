"""The book read in a real browser: headless Chromium opens every page as a reader does (``file://``, no network),
lets its scripts run, then reads what is on the screen.

    make book-check                                   # after make reproduce && make book
    python -m bfpo.book_check --profile smoke         # the same; --help for the options

:func:`bfpo.book.check` reads the HTML as text. This check reads it as a reader sees it. It fails, naming the page
and the element, on:

- math that did not draw: a MathML or MathJax error text on the page (``Error parsing MathML``, ``File failed to
  load``, ``Math input error``), an ``<merror>`` element, or a ``<math>`` element with no size;
- a resource that failed to load (a console error, a failed request: a missing ``_static`` file, a script);
- an image that did not load (not complete, or no natural width);
- a code block or output wider than its column that does not scroll (its content is cut off);
- and what :func:`bfpo.book.check` finds in the text (a formula with a no-break space, a missing image, ...).

It writes one full-page screenshot per page under ``runs/<profile>/book/screenshots/``, for a person to look at.
Chromium comes from Debian's ``chromium`` package; the check installs it with apt-get where it is missing and the
check runs as root, and otherwise says in one line how to install it. Playwright drives it (``executable_path``:
no browser is downloaded).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bfpo.errors import BadInput, run_cli
from bfpo.io import project_path

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
"""Chromium offline and quiet: without the background-networking flags it keeps trying to reach Google."""

ERROR_TEXTS = ("Error parsing MathML", "File failed to load", "Math input error", "Math Processing Error",
               "Unknown node type", "Misplaced &")  # fmt: skip

PAGE_PROBLEMS = """
(errorTexts) => {
  const out = [];
  const name = (el) => {
    const id = el.id ? '#' + el.id : '';
    const names = typeof el.className === 'string' ? el.className.trim().split(/\\s+/) : [];
    const cls = names.filter((c) => c).map((c) => '.' + c).join('');
    return el.tagName.toLowerCase() + id + cls;
  };
  const text = document.body ? document.body.innerText : '';
  for (const t of errorTexts) {
    const at = text.indexOf(t);
    if (at >= 0) out.push(`shows "${text.slice(at, at + 120).split('\\n')[0]}"`);
  }
  document.querySelectorAll('merror').forEach((el, i) =>
    out.push(`formula ${i + 1} is an <merror>: "${el.textContent.slice(0, 80)}"`));
  document.querySelectorAll('math').forEach((el, i) => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0)
      out.push(`formula ${i + 1} (<math>) drew nothing: "${el.textContent.slice(0, 60)}"`);
  });
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) out.push(`image ${img.getAttribute('src')} did not load`);
  }
  const html = 'http://www.w3.org/1999/xhtml';
  const scrolls = (el) => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  document.querySelectorAll('pre, div.cell_output, div.output, table, math[display="block"]').forEach((el) => {
    if (el.scrollWidth <= el.clientWidth + 1) return;
    for (let a = el; a && a !== document.body; a = a.parentElement) {
      // it, or a block around it, scrolls; an HTML element only: Chromium draws no scrollbar on a MathML one
      if (a.namespaceURI === html && scrolls(a) && a.scrollWidth > a.clientWidth) return;
    }
    const line = (el.innerText || el.textContent).split('\\n').sort((x, y) => y.length - x.length)[0] || '';
    const size = `${el.scrollWidth}px wide in a ${el.clientWidth}px column`;
    out.push(`${name(el)} is ${size} and does not scroll: "${line.slice(0, 60)}"`);
  });
  return out;
}
"""


def chromium(install: bool = True) -> str:
    """The Chromium executable: ``$BFPO_CHROMIUM``, else ``chromium`` on the PATH, else Debian's package installed
    with apt-get (as root, where ``install``); otherwise one :class:`BadInput` line saying how to get it."""
    found = os.environ.get("BFPO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if install and shutil.which("apt-get") and os.geteuid() == 0:
        print("book-check: installing Debian's chromium (apt-get, once)", file=sys.stderr)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, **quiet)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False, **quiet)
        if done.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")
        raise BadInput(f"could not install chromium with apt-get: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    raise BadInput(
        "no Chromium: install Debian's package (sudo apt-get install chromium) or set BFPO_CHROMIUM to a Chromium"
    )


def pages_of(html: Path) -> list[Path]:
    """Every page of the site but Sphinx's own (search, genindex)."""
    own = {"search.html", "genindex.html", "py-modindex.html"}
    return [p for p in sorted(html.rglob("*.html")) if p.name not in own and not p.name.startswith("_")]


def check(html: str | Path, screenshots: str | Path | None = None, executable: str | None = None) -> list[str]:
    """Open every page of the built site ``html`` in headless Chromium; return the problems, each naming its page
    (empty when all is well). ``screenshots``: a folder for one full-page PNG per page."""
    from playwright.sync_api import sync_playwright

    html = Path(html)
    if not (html / "index.html").is_file():
        raise BadInput(f"{html}: no built book (index.html); run `make book` first")
    shots = Path(screenshots) if screenshots else None
    if shots:
        shutil.rmtree(shots, ignore_errors=True)
        shots.mkdir(parents=True)
    from bfpo import book

    problems = book.check(html, [])  # what the HTML text shows (a formula with a no-break space, ...)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable or chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            seen: list[str] = []
            page.on(
                "console", lambda m: seen.append(f"console {m.type}: {m.text[:160]}") if m.type == "error" else None
            )
            page.on("pageerror", lambda e: seen.append(f"script error: {str(e)[:160]}"))
            page.on("requestfailed", lambda r: seen.append(f"{r.url.split('/html/')[-1]} failed to load ({r.failure})"))
            for path in pages_of(html):
                rel = path.relative_to(html).as_posix()
                seen.clear()
                page.goto(path.resolve().as_uri(), wait_until="load")
                page.wait_for_timeout(300)  # scripts that run after load (MathJax did) have their turn
                found = list(dict.fromkeys(seen + page.evaluate(PAGE_PROBLEMS, list(ERROR_TEXTS))))
                problems += [f"{rel}: {what}" for what in found]
                if shots:
                    page.screenshot(path=str(shots / (rel.replace("/", "__").removesuffix(".html") + ".png")),
                                    full_page=True)  # fmt: skip
        finally:
            browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    from bfpo.notebooks import PROFILES

    parser = argparse.ArgumentParser(
        prog="python -m bfpo.book_check",
        description="Read the built book of a profile in headless Chromium (no network): fail, naming the page and "
        "the element, on math that did not draw, a resource or image that failed to load, or a code block cut off "
        "at its column's edge; write one screenshot per page to runs/<profile>/book/screenshots/.",
    )
    parser.add_argument("--profile", choices=PROFILES, default="smoke")
    parser.add_argument("--html", help="the built site (default runs/<profile>/book/html)")
    parser.add_argument("--screenshots", help="where the screenshots go (default runs/<profile>/book/screenshots)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)

    def work() -> int:
        html = project_path(args.html or f"runs/{args.profile}/book/html")
        shots = project_path(args.screenshots or f"runs/{args.profile}/book/screenshots")
        problems = check(html, shots)
        pages = len(pages_of(html))
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"book-check: {len(problems)} problem(s) on {pages} pages; screenshots in {shots}", file=sys.stderr)
            return 1
        print(f"book-check: {pages} pages read in Chromium, no problem; screenshots in {shots}")
        return 0

    return run_cli("bfpo.book_check", work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
