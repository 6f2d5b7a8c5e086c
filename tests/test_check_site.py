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


def _explorer_site(root, store):
    """A page with the decay explorer over synthetic runs stored in ``store``."""
    from synthetic import hist

    from ex3lib import pages

    g = pages.GRIDS["decay"]
    runs = {}
    for k, c in enumerate(g.configs()):
        fields = c.to_dict()
        fields.pop("seed")
        runs[c] = hist(0.9 + 0.005 * k, **fields)
        store.put(c, runs[c])
    (root / "_static").mkdir(parents=True)
    (root / "_static" / pages.PLOTLY_JS).symlink_to(pages.plotly_js_path())
    (root / "decay.html").write_text(HEAD.format(
        head=f'<link rel="icon" href="data:,"><script defer src="_static/{pages.PLOTLY_JS}"></script>',
        body=pages.element(pages.runs_payload(g, runs))))
    return g, runs


def _drive(root, name, store=None, shots=None):
    """``site_explorers.check_explorers`` on page ``name`` of ``root``: its problems, console errors, text."""
    from playwright.sync_api import sync_playwright

    import site_explorers

    server, base = check_site.serve(root)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=check_site.CHROMIUM, args=check_site.FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.goto(base + name, wait_until="load")
            problems = site_explorers.check_explorers(page, name, shots or root / "shots", store=store)
            text = page.locator(".ex3-explorer-readout").first.text_content()
            browser.close()
    finally:
        server.shutdown()
    return problems + [f"console error: {e}" for e in errors], text


def test_explorers_are_driven_and_compared_with_the_store(tmp_path):
    from ex3lib import ResultsStore

    store = ResultsStore(tmp_path / "store")
    g, _ = _explorer_site(tmp_path / "site", store)
    (tmp_path / "site" / "shots").mkdir()
    assert _drive(tmp_path / "site", "decay.html", store)[0] == []
    shots = sorted(p.name for p in (tmp_path / "site" / "shots").glob("*.png"))
    assert len(shots) == 4 and all(s.startswith("decay-decay-") for s in shots), shots


def test_an_explorer_that_shows_other_numbers_than_the_store_is_reported(tmp_path):
    from synthetic import hist

    from ex3lib import ResultsStore

    store = ResultsStore(tmp_path / "store")
    g, runs = _explorer_site(tmp_path / "site", store)
    (tmp_path / "site" / "shots").mkdir()
    # The store now holds another history for the last η_N at the first η0 (a cell the check selects).
    changed = g.cell(0, len(g.columns.choices) - 1)
    fields = changed.to_dict()
    fields.pop("seed")
    store.put(changed, hist(0.5, **fields))
    problems, _ = _drive(tmp_path / "site", "decay.html", store)
    assert any("the curves are not the stored run's" in p for p in problems), problems
    assert any("the text does not say 'final test accuracy 0.5000'" in p for p in problems), problems


def test_the_gradients_explorer_is_driven_against_its_sweep(tmp_path):
    import numpy as np

    from ex3lib import MLP, gradcheck, pages

    net = MLP((784, 12, 10), seed=0)
    x = np.zeros(784)
    x[300:340] = 0.5
    sweep = gradcheck.h_sweep(net, x, 3, hs=np.logspace(-1, -12, 12))
    root = tmp_path / "site"
    (root / "_static").mkdir(parents=True)
    (root / "_static" / pages.PLOTLY_JS).symlink_to(pages.plotly_js_path())
    (root / "gradients.html").write_text(HEAD.format(
        head=f'<link rel="icon" href="data:,"><script defer src="_static/{pages.PLOTLY_JS}"></script>',
        body=pages.element(pages.gradients_payload(sweep, h=1e-8))))
    problems, text = _drive(root, "gradients.html", shots=tmp_path)
    assert problems == []
    assert text.startswith("h = 1.0e-01: median relative error forward "), text  # the last step selected
    assert len(list(tmp_path.glob("gradients-gradients-*.png"))) == 2
