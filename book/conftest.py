"""pytest --nbval runs the chapters in the book's reading order (``_toc.yml``), on one worker.

A chapter trains the runs it needs and the results store keeps them, so in
reading order each chapter trains its own runs and the conclusion, which puts
the earlier chapters' runs side by side, reads them back. In pytest's default
(alphabetical) order the conclusion ran second and trained the protocol
chapter's runs inside one of its cells. ``jupyter-book build`` reads the
chapters in the same order (``book/_ext/ex3_html.py``).

Under pytest-xdist (``-n 2`` in ``pyproject.toml``) the scheduler below sends
every chapter's cells to one worker as one unit of work, which xdist starts
first (it starts the largest units first), so that worker executes the
chapters one after the other in reading order while the other worker runs the
unit tests one by one. Without xdist (``-n 0`` or ``-p no:xdist``) the unit tests run first.
(xdist's own ``--dist loadgroup`` cannot group the cells: it renames items
through an attribute that pytest 9.2's nodes no longer read.)
"""

import sys
from pathlib import Path

import pytest
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))
from ex3_html import reading_order  # noqa: E402


def chapter_key(path, order):
    """Where a collected file runs: the unit tests first, in pytest's order, then notebooks in ``order``."""
    path = Path(path).resolve()
    if path.suffix != ".ipynb":
        return (0, 0)
    name = path.relative_to(ROOT).with_suffix("").as_posix()
    return (1, order.index(name) if name in order else len(order))


#: The xdist unit of work that holds every chapter's cells.
BOOK_UNIT = "book"


def work_unit(nodeid):
    """The unit of work a test belongs to: every notebook cell to :data:`BOOK_UNIT`, every other test on its own."""
    return BOOK_UNIT if nodeid.split("::", 1)[0].endswith(".ipynb") else nodeid


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown, and never called, under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ChaptersOnOneWorker(LoadScopeScheduling):
        """xdist's scope scheduling, with :func:`work_unit` as the scope (items keep their order inside it)."""

        def _split_scope(self, nodeid):
            return work_unit(nodeid)

    return ChaptersOnOneWorker(config, log)


def pytest_collection_modifyitems(session, config, items):
    order = reading_order(parse_toc_yaml(str(ROOT / "_toc.yml")))
    # sorted() is stable: within a file (and among the unit tests) pytest's order is kept
    items[:] = sorted(items, key=lambda item: chapter_key(item.path, order))
