"""The grid of a sweep: ``-p`` values and grid files, checked against the notebook's parameters.

:func:`make_sweep` reads the parameters a notebook declares (papermill's
inspection of its ``parameters`` cell), converts every value to the declared
type, refuses unknown names and wrong types with a message naming them, and
expands the grid into :class:`Point` s, each with a name that is also its file
name.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Point", "Sweep", "SweepError", "declared_parameters", "make_sweep", "parse_values",
           "point_name", "read_grid_file"]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=,+-]")


class SweepError(ValueError):
    """A sweep that cannot start: a bad grid, notebook or option. Nothing has run."""


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its file name and every parameter passed to the notebook.

    Attributes
    ----------
    name : str
        The point's name (:func:`point_name`), also the stem of its files.
    swept : dict
        The swept parameters of this point, name -> value, in grid order.
    parameters : dict
        Every parameter passed to the notebook: the fixed ones and ``swept``.
    """

    name: str
    swept: dict
    parameters: dict


@dataclass
class Sweep:
    """An expanded, validated sweep of one notebook, as :func:`make_sweep` returns it.

    Attributes
    ----------
    notebook : pathlib.Path
        The chapter notebook.
    declared : dict
        The parameters it declares (:func:`declared_parameters`).
    fixed : dict
        Parameters passed to every point, name -> value.
    swept : dict
        Swept parameters, name -> list of values, in the given order.
    points : list of Point
        The Cartesian product of ``swept``, the last parameter varying fastest.
    """

    notebook: Path
    declared: dict
    fixed: dict
    swept: dict
    points: list = field(default_factory=list)

    @property
    def chapter(self) -> str:
        """The notebook's name without ``.ipynb``: the sweep writes into ``<out>/<chapter>/``."""
        return self.notebook.stem


def parse_values(text: str, kind: str | None = None) -> list:
    """Split a ``-p`` value on top-level commas and read each item as a literal.

    ``"0.1,0.01"`` is two values; ``"[0.1, 0.01]"`` one list; ``"[0.1],[0.01]"``
    two lists; ``"sequential"`` the string itself. Items are read as Python
    literals (``1e-3``, ``True``, ``'a,b'``), then as YAML (``true``, ``null``),
    else kept as text. For a parameter declared ``str`` (``kind="str"``) every
    item is text, quoted or not (``3`` is ``"3"``).

    Parameters
    ----------
    text : str
        The VALUES of ``-p NAME VALUES``.
    kind : str, optional
        The type the notebook declares for the parameter (papermill's
        ``inferred_type_name``), e.g. ``"str"``.

    Returns
    -------
    list
        One value per item; one item fixes the parameter, more sweep it.

    Examples
    --------
    >>> parse_values("0.1,0.01"), parse_values("[0.1],[0.01]"), parse_values("3,'a,b'", "str")
    ([0.1, 0.01], [[0.1], [0.01]], ['3', 'a,b'])
    """
    items = _split_top_level(text)
    if kind == "str":
        return [_unquote(item.strip()) for item in items]
    return [_literal(item.strip()) for item in items]


def _unquote(text: str) -> str:
    """``text`` without the quotes around it, if it is one quoted string literal."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(text)
            if isinstance(value, str):
                return value
    return text


def _split_top_level(text: str) -> list:
    """``text`` split on the commas outside brackets and quotes."""
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


class _Text(str):
    """A ``-p`` item that is no literal: only a ``str`` parameter accepts it."""


def _literal(text: str):
    """``text`` as a Python literal, else a YAML bool or null, else :class:`_Text`."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return _Text(text)  # not YAML either (e.g. "[0.1,"): text, which only a str parameter takes
    if isinstance(value, (bool, type(None))) and text:
        return value
    return _Text(text)


def _unbalanced(text: str) -> bool:
    """Whether ``text`` has an unclosed quote or brackets that do not pair up."""
    depth, quote = [], None
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth.append(ch)
        elif ch in pairs:
            if not depth or depth.pop() != pairs[ch]:
                return True
    return bool(depth or quote)


def read_grid_file(path) -> tuple[dict, dict]:
    """Read a YAML grid file: ``grid`` maps names to lists of values, ``parameters`` to fixed values.

    Example::

        grid:
          learning_rate: [0.1, 0.01, 0.001]
          batch_size: [1, 10, 100]
        parameters:
          n_seeds: 1

    Parameters
    ----------
    path : str or path-like
        The grid file, e.g. ``sweeps/table2.yaml``.

    Returns
    -------
    grid : dict
        Name -> non-empty list of values.
    fixed : dict
        Name -> value.

    Raises
    ------
    SweepError
        The file cannot be read, is not UTF-8 YAML, has keys other than ``grid``
        and ``parameters``, a value that is no list, or a name both swept and fixed.
    """
    import yaml

    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SweepError(f"cannot read the grid file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise SweepError(f"the grid file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} "
                         f"at position {err.start}); save it as UTF-8 YAML") from None
    except yaml.YAMLError as err:
        raise SweepError(f"the grid file {path} is not valid YAML: {err}") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise SweepError(f"the grid file {path} must be a mapping with the keys 'grid' and/or "
                         f"'parameters', got a {type(content).__name__}")
    unknown = sorted(set(content) - {"grid", "parameters"})
    if unknown:
        raise SweepError(f"the grid file {path} has unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: 'grid' (name: list of values) and 'parameters' (name: value)")
    grid = content.get("grid") or {}
    fixed = content.get("parameters") or {}
    for key, value in (("grid", grid), ("parameters", fixed)):
        if not isinstance(value, dict):
            raise SweepError(f"'{key}' in {path} must map parameter names to values, "
                             f"got a {type(value).__name__}")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid.{name} in {path} must be a non-empty list of values, got {values!r}")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise SweepError(f"{', '.join(both)} in {path} is both swept (grid) and fixed (parameters)")
    return {str(k): list(v) for k, v in grid.items()}, {str(k): v for k, v in fixed.items()}


def declared_parameters(notebook) -> dict:
    """The parameters the notebook's ``parameters`` cell declares: name -> papermill's inspection.

    Parameters
    ----------
    notebook : str or path-like
        A ``.ipynb`` file.

    Returns
    -------
    dict
        Name -> papermill's description (``inferred_type_name``, ``default``,
        ``help``), in the order of the cell.

    Raises
    ------
    SweepError
        The notebook does not exist, is no ``.ipynb``, cannot be read, or
        declares no parameters.
    """
    import papermill

    notebook = Path(notebook)
    if not notebook.is_file():
        raise SweepError(f"notebook {notebook} does not exist")
    if notebook.suffix != ".ipynb":
        raise SweepError(f"{notebook} is not a notebook (.ipynb)")
    try:
        declared = papermill.inspect_notebook(str(notebook))
    except Exception as err:
        raise SweepError(f"cannot read the parameters of {notebook}: {type(err).__name__}: {err}") from None
    if not declared:
        raise SweepError(f"{notebook} declares no parameters: it needs a cell tagged 'parameters' "
                         f"with one 'name: type = value' per line")
    return declared


class _WrongType(Exception):
    """A value that is not of the type its parameter declares; the message says which."""


def _coerce(name, value, spec, notebook):
    """``value`` in the type the notebook declares for ``name``; raises _WrongType with a message."""
    kind = (spec.get("inferred_type_name") or "None").strip()
    shown = f"{value!r} ({'text' if isinstance(value, _Text) else type(value).__name__})"

    def wrong():
        article = "an" if kind[:1] in "aeiou" else "a"
        hint = ""
        if isinstance(value, _Text) and _unbalanced(value):
            hint = (" (its brackets or quotes do not pair up; a list is written [0.1,0.01], "
                    "several lists [0.1],[0.01])")
        return _WrongType(f"{name}: {shown} is not {article} {kind}, the type {notebook} declares "
                          f"for {name}{hint}")

    if kind == "str":
        if isinstance(value, str):
            return str(value)
        raise wrong()
    if kind == "float" and isinstance(value, str):
        try:
            return float(value)  # from YAML, which reads 1e-3 as text
        except ValueError:
            raise wrong() from None
    if isinstance(value, _Text):
        if kind in ("None", ""):
            return str(value)
        raise wrong()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": number,
              "bool": isinstance(value, bool),
              "list": isinstance(value, list),
              "tuple": isinstance(value, (list, tuple)),
              "set": isinstance(value, (list, set)),
              "dict": isinstance(value, dict)}
    if kind not in checks:
        return value  # unannotated or a complex annotation: papermill passes it as given
    if not checks[kind]:
        raise wrong()
    return float(value) if kind == "float" else value


#: Parameters a sweep sets for every point unless it is given them: an experiment chapter's page explorer
#: shows a fixed grid of runs that no swept parameter changes, so the points skip it.
POINT_DEFAULTS = {"explorer": False}


def make_sweep(notebook, grid=None, fixed=None) -> Sweep:
    """Validate a grid against the notebook's declared parameters and expand it into points.

    A parameter of :data:`POINT_DEFAULTS` that the notebook declares and the
    sweep neither sweeps nor fixes is fixed to its value there.

    Parameters
    ----------
    notebook : str or path-like
        A notebook with a ``parameters`` cell.
    grid : dict, optional
        Name -> list of values, swept as a Cartesian product (in the given order).
    fixed : dict, optional
        Name -> value, passed to every point.

    Returns
    -------
    Sweep
        The values converted to the declared types, and the points.

    Raises
    ------
    SweepError
        An unknown parameter, a value of the wrong type, an empty list of values,
        or a parameter both swept and fixed. Every problem is listed.
    """
    notebook = Path(notebook)
    grid = dict(grid or {})
    fixed = dict(fixed or {})
    declared = declared_parameters(notebook)
    problems = []
    for name in list(grid) + list(fixed):
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{notebook} has no parameter {name!r}{hint}; it declares: "
                            f"{', '.join(declared)}")
    for name in set(grid) & set(fixed):
        problems.append(f"{name} is both swept and fixed")
    checked_grid, checked_fixed = {}, {}
    for name, values in grid.items():
        if name not in declared:
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"{name}: the values to sweep must be a non-empty list, got {values!r}")
            continue
        coerced = []
        for value in values:
            try:
                value = _coerce(name, value, declared[name], notebook)
            except _WrongType as err:
                problems.append(str(err))
                continue
            if value in coerced:
                problems.append(f"{name}: the value {value!r} is listed twice")
            else:
                coerced.append(value)
        checked_grid[name] = coerced
    for name, value in fixed.items():
        if name not in declared:
            continue
        try:
            checked_fixed[name] = _coerce(name, value, declared[name], notebook)
        except _WrongType as err:
            problems.append(str(err))
    if problems:
        raise SweepError("invalid sweep of " + str(notebook) + ":\n  " + "\n  ".join(problems))
    for name, value in POINT_DEFAULTS.items():
        if name in declared and name not in checked_grid and name not in checked_fixed:
            checked_fixed[name] = value

    sweep = Sweep(notebook=notebook, declared=declared, fixed=checked_fixed, swept=checked_grid)
    names = list(checked_grid)
    seen = {}
    for combo in itertools.product(*(checked_grid[n] for n in names)):
        swept = dict(zip(names, combo))
        name = point_name(swept)
        if name in seen:  # two values that print alike, e.g. 1 and 1.0 of an unannotated parameter
            name = f"{name}-{_digest(swept)[:8]}"
        seen[name] = True
        sweep.points.append(Point(name=name, swept=swept, parameters={**checked_fixed, **swept}))
    return sweep


def point_name(swept: dict) -> str:
    """A file name for a point: ``learning_rate=0.1,batch_size=10`` (``default`` with nothing swept).

    Characters other than letters, digits and ``._=,+-`` become ``_``; a name
    that had any, or is longer than 120 characters, is cut to 100 and gets 8
    digits of a hash of the values, so that different points keep different
    names.

    Parameters
    ----------
    swept : dict
        The swept parameters of the point, name -> value.

    Returns
    -------
    str

    Examples
    --------
    >>> point_name({"learning_rate": 0.1, "batch_size": 10})
    'learning_rate=0.1,batch_size=10'
    """
    if not swept:
        return "default"
    text = ",".join(f"{k}={_short(v)}" for k, v in swept.items())
    name = _SAFE_NAME.sub("_", text)
    if len(name) > 120 or name != text:
        name = f"{name[:100]}-{_digest(swept)[:8]}"
    return name


def _short(value) -> str:
    """How a value reads in a point name: floats by repr (``0.1``, ``1e-05``), the rest by str."""
    return repr(value) if isinstance(value, float) else str(value)


def _digest(obj) -> str:
    """The sha256 of ``obj`` as sorted JSON, in hexadecimal."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()
