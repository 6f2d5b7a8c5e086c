"""Open every page of the built book in headless Chromium and check it as a reader would see it.

For each HTML page of ``_build/html`` (or the folder given): no console
errors, every image loaded (``naturalWidth > 0``), no unresolved figure or
table reference (Sphinx leaves "??" or a ``std-ref`` span without a target),
and a full-page screenshot in ``_build/screenshots``.  Uses Debian's
``/usr/bin/chromium`` through Playwright; no browser is downloaded.

The pages load MathJax from the jsdelivr CDN.  Where the machine has no route
to it (as in CI), each CDN request is answered from the same package and
version fetched with ``npm pack`` from the npm registry, so the pages are
checked with the code a reader gets.  Any other off-site request fails the
check.

Usage: ``python scripts/check_site.py [_build/html]``; exits 1 listing every problem.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import mimetypes
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
# The machine's network is closed: keep Chromium from trying to phone home.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

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
BROKEN_IMAGES_JS = """() => Array.from(document.images)
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => img.getAttribute('src'))"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(root: Path):
    """A local HTTP server for ``root`` on a free loopback port; returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# jsdelivr's npm CDN: https://cdn.jsdelivr.net/npm/<package>@<version>/<path>
CDN_NPM = re.compile(r"https://cdn\.jsdelivr\.net/npm/((?:@[^/]+/)?[^/@]+@[^/]+)/(.+)")


class NpmMirror:
    """Files of npm packages, fetched once per package with ``npm pack`` into a temporary folder."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="ex3-npm-"))

    def file(self, spec: str, path: str) -> Path | None:
        folder = self.root / spec.replace("/", "__")
        if not folder.exists():
            folder.mkdir(parents=True)
            out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", str(folder)],
                                 capture_output=True, text=True)
            tarballs = list(folder.glob("*.tgz"))
            if out.returncode or not tarballs:
                return None
            with tarfile.open(tarballs[0]) as tar:
                tar.extractall(folder, filter="data")
        target = folder / "package" / path
        return target if target.is_file() else None

    def resolve(self, url: str) -> Path | None:
        """The local file for a CDN ``url``, or None if it is not a known CDN path."""
        m = CDN_NPM.fullmatch(url.split("?")[0].split("#")[0])
        return self.file(m.group(1), m.group(2)) if m else None


def _route(mirror: NpmMirror, base: str, offsite: list):
    def handle(route):
        url = route.request.url
        if url.startswith(base):
            return route.continue_()
        local = mirror.resolve(url)
        if local is None:
            offsite.append(url)
            return route.abort()
        kind = mimetypes.guess_type(local.name)[0] or "application/octet-stream"
        return route.fulfill(path=str(local), content_type=kind,
                             headers={"Access-Control-Allow-Origin": "*"})
    return handle


def check(root: Path, shots: Path) -> list[str]:
    # Every page a reader reaches: skip Sphinx's own index/search pages and the
    # top-level redirect to the root document.
    pages = sorted(p for p in root.rglob("*.html")
                   if not p.relative_to(root).parts[0].startswith("_")
                   and p.name not in ("genindex.html", "search.html")
                   and 'http-equiv="Refresh"' not in p.read_text(errors="replace")[:2000])
    if not pages:
        return [f"no HTML pages under {root}"]
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    server, base = serve(root)
    mirror = NpmMirror()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for page_path in pages:
                rel = page_path.relative_to(root).as_posix()
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                offsite = []
                page.route("**/*", _route(mirror, base, offsite))
                errors = []
                page.on("console", lambda msg, errors=errors: msg.type == "error" and errors.append(msg.text))
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.goto(base + rel, wait_until="networkidle")
                page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15_000)
                problems += [f"{rel}: console error: {e}" for e in errors]
                problems += [f"{rel}: request to an unknown off-site address: {u}" for u in offsite]
                problems += [f"{rel}: image did not load: {src}" for src in page.evaluate(BROKEN_IMAGES_JS)]
                problems += [f"{rel}: unresolved reference: {ref}" for ref in page.evaluate(UNRESOLVED_JS)]
                page.screenshot(path=str(shots / (rel.replace("/", "__") + ".png")), full_page=True)
                page.close()
                print(f"checked {rel}")
            browser.close()
    finally:
        server.shutdown()
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
