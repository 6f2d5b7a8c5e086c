"""The source fingerprint: a hash of the code a training run (or a chapter) depends on.

A stored result is only as good as the code that computed it. The results
store (:mod:`ex3lib.store`) keys every run by its config and
:func:`source_fingerprint`, the sha256 of the code of the modules a run
imports and of the numpy, Numba and Python versions, so an edit to that code
changes every key and an edit to any other module (a chapter's analysis, a
figure, the sweep command) keeps them. The code of a module is its syntax
tree without docstrings (:func:`code_of`): an edit to a docstring, a comment
or the layout of a line computes nothing differently, so it keeps the stored
runs too. The sweep command records :func:`chapter_fingerprint`, which covers
the text of every module a chapter can import (a chapter may print a
function's source, docstring and comments included).

>>> from ex3lib.fingerprint import run_sources, source_fingerprint
>>> "training.py" in run_sources(), len(source_fingerprint())
(True, 64)
"""

from __future__ import annotations

import ast
import functools
import hashlib
import platform
from pathlib import Path

import numba
import numpy as np

__all__ = ["RUN_ROOTS", "chapter_fingerprint", "code_of", "module_fingerprint", "run_sources",
           "source_fingerprint"]

#: The modules that turn a RunConfig into a History: ``run`` (training) and
#: ``load_mnist`` (data). The fingerprint covers them and every ex3lib module
#: they import, found by reading their import statements (:func:`run_sources`),
#: so editing a chapter's analysis, a figure or the sweep command keeps the
#: stored runs, and a new module that training imports is covered without
#: anyone listing it.
RUN_ROOTS = ("training.py", "data.py")


@functools.cache
def module_fingerprint(*roots: str) -> str:
    """Like :func:`source_fingerprint`, over the modules ``roots`` (e.g. ``"hessian.py"``) and what they import.

    For results computed by code other than training, such as the
    measurements :meth:`ex3lib.ResultsStore.get_measurement` keeps.

    Examples
    --------
    >>> module_fingerprint("hessian.py") != source_fingerprint()
    True
    """
    return _fingerprint(run_sources(roots), code_of)


@functools.cache
def source_fingerprint() -> str:
    """The sha256 of the code a training run depends on and of the numpy, Numba and Python versions.

    The files are those of :func:`run_sources`, each hashed as its code
    (:func:`code_of`) with its path relative to the package, in sorted order,
    so renaming, adding or changing the code of a module that training
    imports changes the fingerprint, and editing one it does not import (the
    results store itself, the chapters' analysis, plots, sliders, sweeps), or
    only the docstrings, comments and layout of one it does, does not. It is
    computed once per process: an edit made while a process runs is only seen
    by processes started afterwards.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> len(source_fingerprint())
    64
    """
    return _fingerprint(run_sources(), code_of)


@functools.cache
def chapter_fingerprint() -> str:
    """Like :func:`source_fingerprint`, over every module a chapter can import: all but the sweep command.

    A sweep point is a whole executed chapter, whose figures and text also
    depend on the presentation modules; the sweep command itself runs chapters
    but is never imported by them. Computed once per process, as
    :func:`source_fingerprint` is.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    return _fingerprint((rel for rel, _ in _package_files() if not _is_sweep(rel)), _text)


def _is_sweep(rel: str) -> bool:
    """Whether the package file ``rel`` belongs to the sweep command (the ``sweep/`` package)."""
    return rel == "sweep.py" or rel.startswith("sweep/")


def _package_files():
    """``(path relative to the package, path)`` of every importable ``*.py`` file of ex3lib, sorted."""
    package = Path(__file__).resolve().parent
    # Names starting with a dot are not importable modules, and editors leave
    # such files behind (Emacs lock files are dangling symlinks named .#x.py).
    return sorted(
        (p.relative_to(package).as_posix(), p) for p in package.rglob("*.py")
        if not any(part.startswith(".") for part in p.relative_to(package).parts)
    )


def run_sources(roots=RUN_ROOTS) -> list[str]:
    """The package files ``roots`` import, directly or through each other (paths relative to ex3lib).

    Follows ``from . import x``, ``from .x import y``, ``from ..x import y``
    and ``import ex3lib.x`` statements anywhere in a file (function-level
    imports included); a package counts with its ``__init__.py``, and
    ``from .pkg import name`` also takes ``pkg/name.py`` when there is one.
    ``ex3lib/__init__.py`` itself is left out: it only re-exports names.

    Parameters
    ----------
    roots : iterable of str
        The files to start from, relative to the package; defaults to
        :data:`RUN_ROOTS`.

    Returns
    -------
    list of str
        Paths relative to the package (``"network.py"``, ``"sub/__init__.py"``), sorted.

    Examples
    --------
    >>> "network.py" in run_sources()
    True
    >>> "plots.py" in run_sources()
    False
    """
    package = Path(__file__).resolve().parent
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        tree = ast.parse((package / rel).read_bytes(), filename=rel)
        here = Path(rel).parent  # the package of this module, relative to ex3lib
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.parent
                targets = _module_files(package, base, node.module, [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ex3lib":
                module = node.module.partition(".")[2] or None
                targets = _module_files(package, Path("."), module, [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("ex3lib."):
                        targets += _module_files(package, Path("."), alias.name.partition(".")[2], [])
            todo += [t for t in targets if t not in seen]
    seen.discard("__init__.py")
    return sorted(seen)


def _module_files(package: Path, base: Path, module: str | None, names) -> list[str]:
    """The files behind ``from <base>.<module> import <names>`` (relative to the package)."""
    found = []
    where = base
    if module:
        parts = module.split(".")
        for i, part in enumerate(parts):
            where = where / part
            init = where / "__init__.py"
            if (package / init).is_file():
                found.append(init.as_posix())
            elif i == len(parts) - 1 and (package / where.with_suffix(".py")).is_file():
                found.append(where.with_suffix(".py").as_posix())
    for name in names:
        candidate = where / f"{name}.py"
        if (package / candidate).is_file():
            found.append(candidate.as_posix())
        elif (package / where / name / "__init__.py").is_file():
            found.append((where / name / "__init__.py").as_posix())
    return [f.removeprefix("./") for f in found]


def code_of(source: bytes, filename: str = "<source>") -> bytes:
    r"""What Python computes from ``source``: its syntax tree without docstrings, comments or layout, as bytes.

    Every statement that is only a string constant goes (a docstring, or a
    string standing alone as a note), and ``ast.dump`` leaves out comments,
    line numbers and formatting, so two sources with the same code give the
    same bytes and any change to a name, a number or a statement gives other
    bytes. Objects' ``__doc__`` differ, but no computation reads them.

    Examples
    --------
    >>> code_of(b'def f(x):\n    "Twice x."\n    return 2 * x  # doubled\n') == code_of(b"def f(x): return 2*x")
    True
    >>> code_of(b"def f(x): return 2 * x") == code_of(b"def f(x): return 3 * x")
    False
    """
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                block[:] = [s for s in block if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                                     and isinstance(s.value.value, str))]
    return ast.dump(tree, include_attributes=False).encode()


def _text(source: bytes, filename: str) -> bytes:
    """``source`` as it is (for :func:`chapter_fingerprint`: a chapter may show a docstring)."""
    return source


def _fingerprint(files, content_of) -> str:
    """The sha256 of ``content_of(text, path)`` of each package file in ``files`` (with its path) and of the library versions."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for rel in sorted(files):
        content = content_of((package / rel).read_bytes(), rel)
        # Lengths delimit the fields, so no two different sets of files hash alike.
        for field in (rel.encode(), content):
            h.update(len(field).to_bytes(8, "little"))
            h.update(field)
    versions = (f"numpy={np.__version__}\0numba={numba.__version__}\0"
                f"python={platform.python_implementation()} {platform.python_version()}")
    h.update(versions.encode())
    return h.hexdigest()
