"""The browser check of the built site (scripts/check_site.py) on a small hand-made site.

One page is as the book's should be (MathJax from the site itself, a wide
table that scrolls in its box); the other breaks each rule once. Needs
Debian's Chromium, as the check does; skipped without it.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("playwright")
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import check_site  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(check_site.CHROMIUM).exists(),
                                reason=f"no Chromium at {check_site.CHROMIUM}")

HEAD = """<!DOCTYPE html><html><head><meta charset="utf-8">
<style>body {{ margin: 0; font: 16px sans-serif }} article {{ max-width: 600px; padding: 0 20px }}</style>
{head}</head><body><article class="bd-article">{body}</article></body></html>"""

GOOD = HEAD.format(
    head='<script defer src="_static/mathjax/tex-chtml.js"></script>',
    body="""<p>Maths: <span class="math">\\(\\eta_t = \\frac{\\eta_0}{1 + t}\\)</span></p>
<div class="math">\\[w \\leftarrow w - \\eta \\nabla L\\]</div>
<div style="overflow-x: auto"><table style="width: 1000px"><tr><td>wide, scrolls in its box</td></tr></table></div>
<table><tr><td>narrow</td></tr></table>""")

BAD = HEAD.format(
    head='<script src="https://cdn.example.com/x.js"></script>',
    body="""<p>Untypeset: $x^2 + y_1$</p>
<table style="width: 1000px"><tr><td>wide, cut off</td></tr></table>
<img src="missing.png" alt="">""")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The problems the check finds in the hand-made site, by page, and the screenshots folder."""
    root = tmp_path_factory.mktemp("site")
    mathjax = Path(importlib.util.find_spec("sphinx-mathjax-offline").submodule_search_locations[0])
    (root / "_static").mkdir()
    (root / "_static" / "mathjax").symlink_to(mathjax / "static" / "mathjax")
    (root / "index.html").write_text(HEAD.format(head="", body="<p>Home</p>"))
    (root / "good.html").write_text(GOOD)
    (root / "bad.html").write_text(BAD)
    shots = root.parent / "shots"
    problems = check_site.check(root, shots)
    by_page = {}
    for line in problems:
        page, _, problem = line.partition(": ")
        by_page.setdefault(page, []).append(problem)
    return by_page, shots


def test_a_self_contained_page_has_no_problem(site):
    by_page, shots = site
    assert "good.html" not in by_page and "good.html (file://)" not in by_page, by_page
    assert "index.html" not in by_page
    assert {p.name for p in shots.glob("good-*.png")} == {"good-1400.png", "good-800.png"}


@pytest.mark.parametrize("page", ["bad.html", "bad.html (file://)"])
def test_a_request_outside_the_site_is_blocked_and_reported(site, page):
    assert "request outside the site (blocked): https://cdn.example.com/x.js" in site[0][page]


@pytest.mark.parametrize("page", ["bad.html", "bad.html (file://)"])
def test_raw_tex_and_a_missing_image_are_reported(site, page):
    problems = site[0][page]
    assert any(p.startswith("raw TeX on the page: Untypeset: $x^2") for p in problems), problems
    assert any(p.startswith("image did not load: missing.png") for p in problems), problems


def test_a_missing_file_of_the_site_is_reported(site):
    assert any(p.startswith("failed to load: ") and "missing.png (HTTP 404)" in p for p in site[0]["bad.html"])


def test_a_wide_table_that_does_not_scroll_is_reported_at_each_width(site):
    problems = site[0]["bad.html"]
    for width in check_site.WIDTHS:
        assert any(p.startswith(f"at {width} px: table table (wide, cut off) is 1000 px wide and does not scroll")
                   for p in problems), problems
    # At 1400 px the page is wide enough for it; at 800 px it makes the page scroll sideways.
    assert not any(p.startswith("at 1400 px: the page scrolls sideways") for p in problems)
    assert any(p.startswith("at 800 px: the page scrolls sideways: 1020 px wide in a 800 px window") for p in problems)


def test_the_site_must_have_maths_to_check(tmp_path):
    (tmp_path / "index.html").write_text(HEAD.format(head="", body="<p>No maths here</p>"))
    problems = check_site.check(tmp_path, tmp_path / "shots")
    assert problems == ["no page has maths (http): the maths check checked nothing",
                        "no page has maths (file): the maths check checked nothing"]
