"""The book's Sphinx extension (book/_ext/ex3_html.py) serves plotly.min.js to the pages with an explorer only."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def site(tmp_path):
    from sphinx.cmd.build import build_main

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['ex3_html']\nproject = 'x'\nhtml_theme = 'basic'\n")
    (src / "index.rst").write_text("Index\n=====\n\n.. toctree::\n\n   explorer\n   plain\n")
    (src / "explorer.rst").write_text("Explorer\n========\n\n.. raw:: html\n\n   <div class=\"ex3-explorer\"></div>\n")
    (src / "plain.rst").write_text("Plain\n=====\n\nNo explorer here.\n")
    out = tmp_path / "html"
    assert build_main(["-q", "-b", "html", str(src), str(out)]) == 0
    return out


def test_plotly_is_copied_and_loaded_where_an_explorer_is(site):
    from ex3lib import pages

    copied = site / "_static" / pages.PLOTLY_JS
    assert copied.read_bytes() == pages.plotly_js_path().read_bytes()
    explorer, plain = (site / "explorer.html").read_text(), (site / "plain.html").read_text()
    assert f'src="_static/{pages.PLOTLY_JS}' in explorer and "defer" in explorer.split(pages.PLOTLY_JS)[0][-200:]
    assert pages.PLOTLY_JS not in plain and pages.PLOTLY_JS not in (site / "index.html").read_text()


def _ext():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import ex3_html

    return ex3_html


def test_chapters_are_read_in_the_order_of_the_table_of_contents(tmp_path):
    from types import SimpleNamespace

    from sphinx_external_toc.parsing import parse_toc_yaml

    ex3_html = _ext()
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: index\nchapters:\n  - file: zeta\n    sections:\n      - file: beta\n"
                   "  - file: alpha\n")
    site_map = parse_toc_yaml(str(toc))
    assert ex3_html.reading_order(site_map) == ["index", "zeta", "beta", "alpha"]
    docnames = sorted(["alpha", "beta", "index", "orphan", "zeta"])  # as Sphinx hands them over
    ex3_html._read_in_reading_order(None, SimpleNamespace(external_site_map=site_map), docnames)
    assert docnames == ["index", "zeta", "beta", "alpha", "orphan"]
    plain = ["b", "a"]
    ex3_html._read_in_reading_order(None, SimpleNamespace(), plain)  # no external toc: Sphinx's order stays
    assert plain == ["b", "a"]
    # the book itself: the conclusion, which reuses every chapter's runs, comes after all of them
    book = ex3_html.reading_order(parse_toc_yaml(str(ROOT / "_toc.yml")))
    assert book[0] == "book/index" and book.index("book/conclusion") > book.index("book/protocol")


def test_the_tests_run_the_chapters_in_reading_order():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("book_conftest", ROOT / "book" / "conftest.py")
    conftest = module_from_spec(spec)
    spec.loader.exec_module(conftest)
    order = ["book/index", "book/sgd", "book/conclusion"]
    files = [ROOT / "book" / "conclusion.ipynb", ROOT / "tests" / "test_a.py", ROOT / "book" / "sgd.ipynb",
             ROOT / "book" / "stray.ipynb", ROOT / "tests" / "test_b.py"]
    ranked = sorted(files, key=lambda path: conftest.chapter_key(path, order))
    assert [p.name for p in ranked] == ["test_a.py", "test_b.py", "sgd.ipynb", "conclusion.ipynb", "stray.ipynb"]


def test_every_chapter_cell_goes_to_one_xdist_worker(pytestconfig, monkeypatch):
    from importlib.util import module_from_spec, spec_from_file_location

    import xdist.scheduler.loadscope
    from xdist.scheduler import LoadScopeScheduling

    monkeypatch.setattr(xdist.scheduler.loadscope, "parse_tx_spec_config", lambda config: ["popen"] * 2)

    spec = spec_from_file_location("book_conftest", ROOT / "book" / "conftest.py")
    conftest = module_from_spec(spec)
    spec.loader.exec_module(conftest)
    cells = ["book/sgd.ipynb::Cell 3", "book/conclusion.ipynb::Cell 0"]
    unit_tests = ["tests/test_a.py::test_x", "tests/test_a.py::test_y[ipynb]", "tests/test_b.py::C::test_z"]
    scheduler = conftest.pytest_xdist_make_scheduler(pytestconfig, None)
    assert isinstance(scheduler, LoadScopeScheduling)
    assert {scheduler._split_scope(nodeid) for nodeid in cells} == {conftest.BOOK_UNIT}
    assert [scheduler._split_scope(nodeid) for nodeid in unit_tests] == unit_tests
