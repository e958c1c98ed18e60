"""The book: a page per executed notebook, figures inline byte for byte, no error output, no missing image."""

import base64
import io
import re

import matplotlib
import nbformat
import pytest

from bfpo import book
from bfpo.errors import BadInput

matplotlib.use("Agg")


def _png() -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _executed(folder, name, outputs):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {name}\n\nThe loss $\\mathcal{{L}} = (h_\\pi - g)^2$."),
        nbformat.v4.new_code_cell("work()", outputs=outputs),
    ]
    # as papermill leaves them: the kernel's language is what myst-nb highlights the code with
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")


def _runs(tmp_path, png, error=False):
    runs = tmp_path / "runs"
    image = nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Image>"}
    )
    bar = nbformat.v4.new_output("stream", name="stderr", text="training: 100%|####| 10/10 [00:01<00:00]\n")
    _executed(runs / "notebooks", "01_theory", [bar, image])
    outputs = [nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    if error:
        outputs.append(
            nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=["ValueError: boom"])
        )
    _executed(runs / "notebooks", "02_labeling", outputs)
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "02_label_combinations.png").write_bytes(png)
    (figs / "RESULTS.md").write_text("# Results\n\n![combinations](02_label_combinations.png)\n")
    return runs, figs


def test_book_has_a_page_per_notebook_with_figures_inline_byte_for_byte(tmp_path):
    png = _png()
    runs, figs = _runs(tmp_path, png)
    html = book.build("smoke", runs, figs)
    assert {p.name for p in html.glob("*.html")} >= {"index.html", "results.html", "01_theory.html", "02_labeling.html"}
    page = book._Page()
    page.feed((html / "01_theory.html").read_text())
    (src,) = page.images
    assert (html / src).read_bytes() == png, "the figure is shown as the notebook holds it"
    assert "training: 100%" not in (html / "01_theory.html").read_text(), "progress bars are left out"
    results = book._Page()
    results.feed((html / "results.html").read_text())
    assert [(html / s).read_bytes() for s in results.images] == [png]
    from bfpo.io import project_path

    title = project_path("README.md").read_text().splitlines()[0].removeprefix("# ")
    front = (html / "index.html").read_text()
    assert title.split(":")[0] in front and 'href="01_theory.html"' in front, (
        "the README is the front page, with the toc"
    )


def test_book_check_finds_error_outputs_and_missing_images(tmp_path):
    runs, figs = _runs(tmp_path, _png(), error=True)
    with pytest.raises(RuntimeError, match=r"02_labeling.html shows 1 error output"):
        book.build("smoke", runs, figs)
    html = runs / "book" / "html"
    (html / "01_theory.html").write_text('<html><body><img src="_images/gone.png"></body></html>')
    (html / "02_labeling.html").unlink()
    problems = book.check(html, ["01_theory", "02_labeling"])
    assert "no page for the notebook 02_labeling" in problems
    assert "01_theory.html references the missing image _images/gone.png" in problems


def test_book_without_executed_notebooks_is_one_line(tmp_path, capsys):
    with pytest.raises(BadInput, match="no executed notebooks; run `python -m bfpo.notebooks --profile smoke` first"):
        book.build("smoke", tmp_path / "nothing")
    assert book.main(["--runs-dir", str(tmp_path / "nothing")]) == 2
    assert "no executed notebooks" in capsys.readouterr().err


def test_docs_pages_are_in_the_book_and_its_math_renders_offline(tmp_path):
    """Every docs/ page has a page; math is MathML that browsers draw natively: no page loads MathJax or a CDN."""
    runs, figs = _runs(tmp_path, _png())
    html = book.build("smoke", runs, figs)
    from bfpo.io import project_path

    docs = sorted(p.stem for p in project_path("docs").glob("*.md"))
    assert docs and all((html / "docs" / f"{d}.html").is_file() for d in docs)
    assert book.docs_pages()[: len(docs)] and set(book.docs_pages()) == set(docs)
    page = book._Page()
    page.feed((html / "01_theory.html").read_text())
    assert page.math > 0, "the notebook's $...$ is a math node"
    assert not [s for s in page.scripts if "mathjax" in s.lower()]
    assert "cdn" not in (html / "01_theory.html").read_text().lower()
    # every formula is pre-rendered MathML, which a browser draws with no script and no network
    text = (html / "01_theory.html").read_text()
    assert "<mi>&#x02112;</mi>" in text or "<mi>ℒ</mi>" in text, "the notebook's \\mathcal{L} is MathML"
    assert not [m for m in book.RENDERED.finditer(text) if "<math" not in m.group(2)]
    assert not book.check(html, [])


def test_a_formula_left_as_tex_is_named(tmp_path):
    page = tmp_path / "p.html"
    page.write_text(
        '<span class="math notranslate nohighlight">\\(x^2\\)</span>'
        '<div class="math notranslate nohighlight">\\[\\frac{1}{\\notacommand</div>'
    )
    assert book.render_math(tmp_path) == 1  # x^2 converts; the broken formula stays TeX
    assert "<msup><mi>x</mi><mn>2</mn></msup>" in page.read_text()
    (problem,) = book.check(tmp_path, [])
    assert "p.html shows 1 formula(s) not rendered to MathML" in problem and "frac" in problem


def test_a_page_that_loads_mathjax_is_named(tmp_path):
    (tmp_path / "p.html").write_text('<script src="_static/mathjax/MathJax.js"></script><p>x</p>')
    (problem,) = book.check(tmp_path, [])
    assert problem.startswith("p.html loads MathJax (_static/mathjax/MathJax.js)"), problem


def test_a_broken_internal_link_fails_the_build(tmp_path):
    runs, figs = _runs(tmp_path, _png())
    nb = nbformat.read(runs / "notebooks" / "01_theory.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("See [the missing page](no_such_page.md)."))
    nbformat.write(nb, runs / "notebooks" / "01_theory.ipynb")
    with pytest.raises(RuntimeError, match="sphinx could not build"):
        book.build("smoke", runs, figs)


def test_pages_show_no_path_of_the_building_machine(tmp_path):
    """papermill's injected parameters hold absolute paths: the book writes them relative to the checkout."""
    from bfpo.io import project_path

    root = str(project_path("."))
    runs, figs = _runs(tmp_path, _png())
    nb = nbformat.read(runs / "notebooks" / "02_labeling.ipynb", as_version=4)
    injected = nbformat.v4.new_code_cell(
        f'output_dir = "{root}/runs/smoke"', metadata={"tags": ["injected-parameters"]}
    )
    nb.cells.insert(0, injected)
    nbformat.write(nb, runs / "notebooks" / "02_labeling.ipynb")
    html = book.build("smoke", runs, figs)
    text = (html / "02_labeling.html").read_text()
    assert root not in text and "runs/smoke" in text
    (html / "02_labeling.html").write_text(f"<html><body>{root}/runs</body></html>")
    assert any("building machine's path" in p for p in book.check(html, []))


def test_the_readme_is_short_and_links_every_docs_page():
    from bfpo.io import project_path

    readme = project_path("README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make reproduce" in readme and "make test" in readme
    docs = {p.stem for p in project_path("docs").glob("*.md")}
    linked = set(re.findall(r"\]\(docs/([\w-]+)\.md\)", readme))
    assert linked == docs, (docs - linked, linked - docs)
