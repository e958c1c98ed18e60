"""The book read in headless Chromium (bfpo.book_check): a clean small book passes with a screenshot per page, and
each planted fault (a formula with a no-break space, a missing image, a missing _static file, a code block cut off,
a math error shown) fails it with one line naming the page. Chromium comes from `make browser` (Debian's package);
without it these tests skip, except under CI, where they fail."""

import os
import re
import shutil
import struct

import pytest
from test_book import _png, _runs

from bfpo import book, book_check


@pytest.fixture(scope="module")
def executable():
    try:
        return book_check.chromium(install=False)
    except Exception as e:  # noqa: BLE001 - no Chromium on this machine
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium: CI installs it with `make browser` first ({e})")
        pytest.skip(f"no Chromium ({e}): run `make browser`")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small book (two notebook pages with a formula, an image and code; every docs page), built once."""
    tmp = tmp_path_factory.mktemp("book")
    runs, figs = _runs(tmp, _png())
    return book.build("smoke", runs, figs)


@pytest.fixture
def site(built, tmp_path):
    """A copy of the built book to plant a fault in."""
    return shutil.copytree(built, tmp_path / "html")


def test_a_clean_book_passes_with_a_screenshot_of_every_page(built, executable, tmp_path):
    shots = tmp_path / "shots"
    assert book_check.check(built, shots, executable) == []
    pages = book_check.pages_of(built)
    assert {p.name for p in shots.glob("*.png")} == {
        p.relative_to(built).as_posix().replace("/", "__").replace(".html", ".png") for p in pages
    }
    head = (shots / "01_theory.png").read_bytes()[:24]
    width, height = struct.unpack(">II", head[16:24])
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and width == 1280 and height >= 900, (width, height)
    page = book._Page()
    page.feed((built / "01_theory.html").read_text())
    assert page.math and not [s for s in page.scripts if "mathjax" in s.lower()], "MathML, drawn with no MathJax"
    assert not (built / "_static" / "mathjax").exists()


def test_a_formula_with_a_no_break_space_fails_naming_the_page(site, executable):
    page = site / "01_theory.html"
    page.write_text(page.read_text().replace("</mi>", "</mi><mtext>a&#x000A0;b</mtext>", 1))
    (problem,) = book_check.check(site, None, executable)
    assert problem.startswith("01_theory.html has 1 formula(s) holding a no-break space"), problem


def test_the_converter_output_is_normalised():
    assert "&#x000A0;" in __import__("latex2mathml.converter").converter.convert(r"a~b")
    html = '<span class="math notranslate nohighlight">\\(\\text{if } a~b\\)</span>'
    out = book.MATH.sub(lambda m: m.group(0), html)  # as built
    assert out == html
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p.html").write_text(html)
        assert book.render_math(tmp) == 1
        text = (Path(tmp) / "p.html").read_text()
    assert not any(n in text.lower() for n in book.NO_BREAK_SPACES) and text.count("&#x2004;") == 2


def test_a_missing_image_fails_naming_the_page_and_the_image(site, executable):
    (src,) = re.findall(r'<img[^>]*src="([^"]+)"', (site / "01_theory.html").read_text())
    (site / src).unlink()
    problems = book_check.check(site, None, executable)
    assert f"01_theory.html: image {src} did not load" in problems, problems
    assert all(p.startswith("01_theory.html") for p in problems), problems


def test_a_missing_static_file_fails_on_every_page_naming_it(site, executable):
    (site / "_static" / "doctools.js").unlink()
    problems = book_check.check(site, None, executable)
    assert any(p.startswith("01_theory.html: ") and "doctools.js" in p and "failed to load" in p for p in problems)
    assert len({p.split(":")[0] for p in problems}) == len(book_check.pages_of(site)), "every page names it"


def test_a_code_block_cut_off_at_its_column_fails(site, executable):
    page = site / "02_labeling.html"
    long = "result = " + " + ".join(f"term_{i}" for i in range(80))
    cut = f'<div class="highlight"><pre style="white-space: pre; overflow: hidden">{long}</pre></div>'
    page.write_text(page.read_text().replace("</h1>", "</h1>" + cut, 1))
    (problem,) = book_check.check(site, None, executable)
    assert problem.startswith("02_labeling.html: pre is ") and "does not scroll" in problem and "term_" in problem


def test_the_books_own_css_wraps_long_code(site, executable):
    page = site / "02_labeling.html"
    long = "result = " + " + ".join(f"term_{i}" for i in range(80))
    page.write_text(page.read_text().replace("</h1>", f'</h1><div class="highlight"><pre>{long}</pre></div>', 1))
    assert book_check.check(site, None, executable) == []
    assert "white-space: pre-wrap" in (site / "_static" / "bfpo.css").read_text()


def test_a_wide_formula_scrolls_in_its_block_and_one_cut_off_fails(site, executable):
    page = site / "01_theory.html"
    wide = "<mo>+</mo>".join(f"<msub><mi>x</mi><mn>{i}</mn></msub>" for i in range(120))
    block = f'<div class="math notranslate nohighlight"><math display="block"><mrow>{wide}</mrow></math></div>'
    page.write_text(page.read_text().replace("</h1>", "</h1>" + block, 1))
    assert book_check.check(site, None, executable) == [], "the book's CSS lets div.math scroll"
    css = site / "_static" / "bfpo.css"
    css.write_text(css.read_text().replace("div.math {", "div.math-off {") + "\nmath { overflow-x: auto; }\n")
    problems = book_check.check(site, None, executable)
    assert any(p.startswith("01_theory.html: math is ") and "does not scroll" in p for p in problems), problems


def test_a_math_error_on_the_page_fails(site, executable):
    page = site / "01_theory.html"
    page.write_text(page.read_text().replace("</h1>", "</h1><div>Error parsing MathML: line 1: nbsp</div>", 1))
    (problem,) = book_check.check(site, None, executable)
    assert problem == '01_theory.html: shows "Error parsing MathML: line 1: nbsp"', problem


def test_no_book_is_one_line(tmp_path, capsys):
    assert book_check.main(["--html", str(tmp_path / "nothing")]) == 2
    assert "no built book" in capsys.readouterr().err
