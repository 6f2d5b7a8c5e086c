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
