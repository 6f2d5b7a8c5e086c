"""Open every page of the built book in headless Chromium, with no network, and check it as a reader would see it.

The site must be self-contained: every script, style sheet, font and image a
page uses comes from the built folder itself (MathJax from ``_static/mathjax``).
The check serves ``_build/html`` (or the folder given) on a loopback port and
blocks every request outside it: each blocked address is a problem, and so is
a request inside the site that fails. Chromium also resolves no host name
but the loopback address, so nothing can leave the machine.

Each page, served over HTTP:

- no console error or uncaught exception;
- every image loaded (``naturalWidth > 0``), every web font loaded;
- no unresolved figure or table reference (Sphinx leaves "??" or a
  ``std-ref`` span without a target);
- its maths typeset by MathJax: every ``.math`` element holds an
  ``mjx-container``, none holds a MathJax error, and no TeX (``\\(``, ``\\[``,
  ``$...$``) is left in the page's text;
- at 1400 and 800 px wide: the page never scrolls sideways
  (``document.documentElement.scrollWidth <= innerWidth``), and every table is
  either within its container's visible width or inside a container that
  scrolls sideways; a full-page screenshot at each width in
  ``_build/screenshots`` (``book__sgd-800.png``).

And every explorer of a page (``ex3lib.pages``) driven as a reader would:
for each control two values selected, and after each the figure's curves and
text compared with the selected run in the results store, an element
screenshot saved (``scripts/site_explorers.py``); the experiment chapters of
:data:`EXPLORER_PAGES` must each hold one.

Then every page again, opened from disk (``file://``) in an offline browser:
no console error, no request outside the site, images loaded, maths typeset
and every explorer drawn, as a reader who downloaded the site sees it.

A check of a page is a function ``check(page, visit) -> list[str]`` taking the
Playwright page and a :class:`Visit`; add it to ``PAGE_CHECKS`` (once per page,
over HTTP), ``WIDTH_CHECKS`` (at each width) or ``FILE_CHECKS`` (from disk).
Uses Debian's ``/usr/bin/chromium`` through Playwright; no browser is downloaded.

Usage: ``python scripts/check_site.py [_build/html]``; exits 1 listing every problem.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright
from site_explorers import check_explorers, explorers_ready

CHROMIUM = "/usr/bin/chromium"
# No host name resolves but the loopback address (the server's), so no request
# can leave the machine whatever the routing below lets through; and Chromium
# does not phone home.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
WIDTHS = (1400, 800)
#: Pages that must hold an explorer, where the site has them.
EXPLORER_PAGES = ("book/sgd.html", "book/gradients.html", "book/decay.html", "book/momentum.html",
                  "book/adaptive.html")
HEIGHT = 900
# Addresses that are no request to anywhere: inline data and the page's own objects.
LOCAL_SCHEMES = ("data:", "blob:", "about:")


@dataclass
class Visit:
    """One page being checked: where it is, and where its screenshots go."""

    rel: str            # path under the site's root, e.g. "book/sgd.html"
    url: str            # as the browser opened it (http://127.0.0.1:.../ or file://)
    site: str           # the prefix every request of the page must start with
    shots: Path         # folder for screenshots
    width: int = WIDTHS[0]
    events: list[str] = field(default_factory=list)   # console errors, blocked and failed requests
    maths: int = 0      # .math elements found by maths_typeset

    def screenshot(self, page: Page, name: str) -> Path:
        """Save a full-page screenshot of ``page`` as ``<page>-<name>.png`` (``book__sgd-800.png``)."""
        path = self.shots / f"{self.rel.removesuffix('.html').replace('/', '__')}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


PageCheck = Callable[[Page, Visit], "list[str]"]


BROKEN_IMAGES_JS = """() => Array.from(document.images)
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => img.getAttribute('src'))"""


def images_loaded(page: Page, visit: Visit) -> list[str]:
    return [f"image did not load: {src}" for src in page.evaluate(BROKEN_IMAGES_JS)]


FONTS_JS = """async () => {
  await document.fonts.ready;
  return Array.from(document.fonts).filter(f => f.status === 'error')
    .map(f => `${f.family} ${f.weight} ${f.style}`);
}"""


def fonts_loaded(page: Page, visit: Visit) -> list[str]:
    return [f"font did not load: {font}" for font in page.evaluate(FONTS_JS)]


UNRESOLVED_JS = """() => {
  const bad = [];
  for (const a of document.querySelectorAll('a.reference.internal')) {
    if (/^\\s*\\?\\?\\s*$/.test(a.textContent)) bad.push(a.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll('span.xref, span.std-ref, span.std-numref')) {
    if (!el.closest('a')) bad.push(el.outerHTML.slice(0, 120));
  }
  return bad;
}"""


def references_resolved(page: Page, visit: Visit) -> list[str]:
    return [f"unresolved reference: {ref}" for ref in page.evaluate(UNRESOLVED_JS)]


# Sphinx writes maths as .math elements holding \(...\) or \[...\]; MathJax
# replaces the TeX with an mjx-container. Text outside maths and code that still
# looks like TeX (delimiters, or $...$ around a command, ^ or _) was never typeset.
MATHS_JS = r"""async () => {
  const maths = Array.from(document.querySelectorAll('.math'));
  const problems = [], started = Date.now();
  while (maths.length && !(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() - started > 20000) { problems.push('MathJax did not start'); break; }
    await new Promise(r => setTimeout(r, 100));
  }
  if (maths.length && !problems.length) await MathJax.startup.promise;
  await document.fonts.ready;
  for (const el of maths) {
    if (!el.querySelector('mjx-container')) problems.push('not typeset: ' + el.textContent.trim().slice(0, 80));
  }
  for (const err of document.querySelectorAll('mjx-merror')) {
    problems.push('MathJax error: ' + (err.getAttribute('data-mjx-error') || err.textContent).slice(0, 120));
  }
  const tex = /\\\(|\\\[|\$[^$\n]{0,200}?[\\^_][^$\n]{0,200}?\$/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
    n.parentElement.closest('mjx-container, pre, code, script, style, textarea, .highlight')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (tex.test(n.textContent) && n.parentElement.getClientRects().length) problems.push('raw TeX on the page: ' + n.textContent.trim().slice(0, 80));
  }
  return {count: maths.length, problems};
}"""


def maths_typeset(page: Page, visit: Visit) -> list[str]:
    result = page.evaluate(MATHS_JS)
    visit.maths = result["count"]
    return result["problems"]


# Tables: one inside an element that scrolls sideways is fine; otherwise it must
# lie within the first ancestor that clips it, or within the page's content
# column (the article) if none does.
LAYOUT_JS = r"""() => {
  const problems = [];
  const width = window.innerWidth, root = document.documentElement;
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : '');
  if (root.scrollWidth > width) {
    // The outermost elements that stick out, leaving out what scrolls or is clipped inside a box.
    const boxed = el => {
      for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
        if (getComputedStyle(a).overflowX !== 'visible') return true;
      }
      return false;
    };
    const wide = Array.from(document.body.querySelectorAll('*')).filter(el => {
      const r = el.getBoundingClientRect();
      return r.width && r.right > width + 1 && getComputedStyle(el).position !== 'fixed' && !boxed(el);
    }).filter((el, _, all) => !all.includes(el.parentElement));
    problems.push(`the page scrolls sideways: ${root.scrollWidth} px wide in a ${width} px window`
      + (wide.length ? '; widest: ' + wide.slice(0, 3).map(describe).join(', ') : ''));
  }
  const column = document.querySelector('article.bd-article, main, [role=main]') || document.body;
  const inner = el => {  // an element's box less its padding: where its content may go
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    return {left: r.left + parseFloat(cs.paddingLeft), right: r.right - parseFloat(cs.paddingRight)};
  };
  for (const table of document.querySelectorAll('table')) {
    const r = table.getBoundingClientRect();
    if (!r.width || !table.getClientRects().length) continue;
    let box = table.parentElement, scrolls = false;
    for (; box && box !== document.body; box = box.parentElement) {
      const ox = getComputedStyle(box).overflowX;
      if (ox === 'auto' || ox === 'scroll') { scrolls = true; break; }
      if (ox === 'hidden' || ox === 'clip') break;
    }
    const name = describe(table) + ' (' + (table.querySelector('caption, th, td')?.textContent.trim().slice(0, 30) || '') + ')';
    const clip = !scrolls && box && box !== document.body ? box : column;
    const limit = inner(scrolls ? column : clip);
    const within = s => s.left >= limit.left - 1 && s.right <= limit.right + 1;
    if (scrolls && !within(box.getBoundingClientRect())) {
      problems.push(`table ${name}: its scrolling container ${describe(box)} is wider than the content column`);
    } else if (!scrolls && !within(r)) {
      problems.push(`table ${name} is ${Math.round(r.width)} px wide and does not scroll: `
        + `it spans ${Math.round(r.left)}..${Math.round(r.right)} px, ${clip === column ? 'the content column' : 'its container'} `
        + `${describe(clip)} ${Math.round(limit.left)}..${Math.round(limit.right)} px`);
    }
  }
  return problems;
}"""


def layout_fits(page: Page, visit: Visit) -> list[str]:
    return [f"at {visit.width} px: {p}" for p in page.evaluate(LAYOUT_JS)]


def full_page_screenshot(page: Page, visit: Visit) -> list[str]:
    visit.screenshot(page, str(visit.width))
    return []


def explorers_work(page: Page, visit: Visit) -> list[str]:
    problems = check_explorers(page, visit.rel, visit.shots)
    if visit.rel in EXPLORER_PAGES and page.locator(".ex3-explorer").count() == 0:
        problems.append("the chapter has no explorer (ex3lib.pages.explorer)")
    return problems


def explorers_drawn(page: Page, visit: Visit) -> list[str]:
    return explorers_ready(page)


PAGE_CHECKS: list[PageCheck] = [images_loaded, fonts_loaded, references_resolved, maths_typeset, explorers_work]
WIDTH_CHECKS: list[PageCheck] = [layout_fits, full_page_screenshot]
FILE_CHECKS: list[PageCheck] = [images_loaded, fonts_loaded, maths_typeset, explorers_drawn]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(root: Path):
    """A local HTTP server for ``root`` on a free loopback port; returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def site_pages(root: Path) -> list[Path]:
    """Every page a reader reaches: not Sphinx's index and search pages, nor the top-level redirect."""
    return sorted(p for p in root.rglob("*.html")
                  if not p.relative_to(root).parts[0].startswith("_")
                  and p.name not in ("genindex.html", "search.html")
                  and 'http-equiv="Refresh"' not in p.read_text(errors="replace")[:2000])


def _outside(url: str, site: str) -> bool:
    return not (url.startswith(site) or url.startswith(LOCAL_SCHEMES))


def open_page(context, visit: Visit) -> Page:
    """Open ``visit.url`` in ``context``, blocking and recording every request outside ``visit.site``.

    ``visit.events`` collects console errors, uncaught exceptions, blocked
    requests and failed requests of the site's own files.
    """
    page = context.new_page()
    events = visit.events

    def route(r):
        if _outside(r.request.url, visit.site):
            return r.abort("blockedbyclient")
        return r.continue_()

    def on_request(request):
        if _outside(request.url, visit.site):
            events.append(f"request outside the site (blocked): {request.url}")

    def on_failed(request):
        if not _outside(request.url, visit.site):
            events.append(f"failed to load: {request.url} ({request.failure})")

    def on_response(response):
        if not _outside(response.url, visit.site) and response.status >= 400:
            events.append(f"failed to load: {response.url} (HTTP {response.status})")

    page.route("**/*", route)
    page.on("request", on_request)
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    page.on("console", lambda msg: msg.type == "error" and events.append(f"console error: {msg.text}"))
    page.on("pageerror", lambda exc: events.append(f"uncaught exception: {exc}"))
    page.goto(visit.url, wait_until="load")
    try:
        page.wait_for_load_state("networkidle", timeout=15_000)
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15_000)
    except PlaywrightError as exc:
        events.append(f"did not finish loading: {exc.message.splitlines()[0]}")
    return page


def _run(page: Page, visit: Visit, checks: list[PageCheck]) -> list[str]:
    problems = []
    for check in checks:
        try:
            problems += check(page, visit)
        except PlaywrightError as exc:
            problems.append(f"{check.__name__} failed: {exc.message.splitlines()[0]}")
    return problems


def check(root: Path, shots: Path) -> list[str]:
    """Every problem of the site under ``root``, as ``"<page>: <problem>"`` lines."""
    root = root.resolve()
    pages = site_pages(root)
    if not pages:
        return [f"no HTML pages under {root}"]
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    server, base = serve(root)
    file_site = root.as_uri() + "/"
    maths = {"http": 0, "file": 0}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            served = browser.new_context(viewport={"width": WIDTHS[0], "height": HEIGHT})
            # Opened from disk: the browser is offline besides.
            offline = browser.new_context(viewport={"width": WIDTHS[0], "height": HEIGHT}, offline=True)
            for path in pages:
                rel = path.relative_to(root).as_posix()
                start = time.monotonic()
                visit = Visit(rel, base + rel, base, shots)
                page = open_page(served, visit)
                found = _run(page, visit, PAGE_CHECKS)
                for width in WIDTHS:
                    visit.width = width
                    page.set_viewport_size({"width": width, "height": HEIGHT})
                    page.wait_for_timeout(300)
                    found += _run(page, visit, WIDTH_CHECKS)
                page.close()
                maths["http"] += visit.maths

                disk = Visit(rel, path.as_uri(), file_site, shots)
                page = open_page(offline, disk)
                found_disk = _run(page, disk, FILE_CHECKS)
                page.close()
                maths["file"] += disk.maths

                problems += [f"{rel}: {p}" for p in visit.events + found]
                problems += [f"{rel} (file://): {p}" for p in disk.events + found_disk]
                print(f"checked {rel}: {visit.maths} maths elements, "
                      f"{len(visit.events) + len(found) + len(disk.events) + len(found_disk)} problem(s), "
                      f"{time.monotonic() - start:.1f} s")
            browser.close()
    finally:
        server.shutdown()
    for mode, count in maths.items():
        if not count:
            problems.append(f"no page has maths ({mode}): the maths check checked nothing")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="_build/html", type=Path)
    parser.add_argument("--screenshots", default="_build/screenshots", type=Path)
    args = parser.parse_args(argv)
    if not (args.root / "index.html").is_file():
        print(f"error: {args.root} holds no built book (no index.html); run jupyter-book build . first",
              file=sys.stderr)
        return 2
    problems = check(args.root, args.screenshots)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(problems)} problem(s); screenshots in {args.screenshots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
