"""One point of a sweep: executing the notebook with papermill, and the point's record.

:func:`execute_point` runs in a worker process (local or on a Dask worker) and
returns what happened as a plain dict; the sweep turns it into the point's
record, a JSON file beside the executed notebook in the :class:`SweepFolder`.
:func:`point_status` decides from the record whether a point can be skipped:
only if it finished for the same parameters, notebook and ex3lib source
(:func:`point_identity`).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from ..fingerprint import chapter_fingerprint
from ..params import OVERRIDES_ENV_VAR
from ..sysutil import atomic_write
from .grid import Point

__all__ = ["PARAMETERS_CHANGED", "RECORD_VERSION", "SweepFolder", "as_stored", "execute_point", "glued_values",
           "point_identity", "point_status", "record_checksum", "record_problem"]

#: The records' format: 2 added the ``sha256`` of the record's content.
RECORD_VERSION = 2

# Every field of a record, and the types its value may have (None: null).
_RECORD_FIELDS = {
    "notebook_sha256": (str,), "ex3lib_fingerprint": (str,), "version": (int,), "point": (str,),
    "notebook": (str,), "parameters": (dict,), "swept": (dict,), "finished": (str,),
    "status": (str,), "error": (str, type(None)), "results": (dict,), "seconds": (int, float),
    "attempts": (int,), "host": (str, type(None)), "sha256": (str,),
}
_STATUSES = ("ok", "failed")
#: What :func:`point_status` says of a point whose record holds other parameters.
PARAMETERS_CHANGED = "its parameters changed since it ran"

# Errors worth a second try: the kernel did not start in time or died under it.
_TRANSIENT = re.compile(r"kernel didn't respond|kernel died|dead kernel|timed? ?out waiting|"
                        r"failed to start the kernel|zmq", re.IGNORECASE)


def execute_point(notebook_text: str, parameters: dict, *, cwd=None, retries: int = 2,
                  start_timeout: float = 120, pinned: dict | None = None) -> dict:
    """Execute a notebook with papermill for one point; never raises for a failing notebook.

    Runs in a worker process (a local one or a Dask worker), whose environment
    it updates with ``pinned`` (and from which it removes
    ``$EX3_BOOK_PARAMETERS``: a point runs with its own parameters only). A
    kernel that does not start or dies is retried up to ``retries`` times; a
    cell that raises is not.

    Parameters
    ----------
    notebook_text : str
        The notebook as JSON text (it travels to the worker; no shared file system is needed).
    parameters : dict
        Every parameter of the point, name -> value.
    cwd : str, optional
        The folder the kernel runs in (the notebook's own, for a local sweep).
    retries : int
        Further attempts after a kernel failed to start or died.
    start_timeout : float
        Seconds a kernel may take to start.
    pinned : dict, optional
        Environment variables to set first (one thread per library, ``EX3_WORKERS``).

    Returns
    -------
    dict
        ``status`` (``"ok"`` or ``"failed"``), ``error`` (None or a message),
        ``results`` (the glued scalars, :func:`glued_values`), ``notebook``
        (the executed notebook as JSON text, also when it failed, None if it
        never ran), ``seconds``, ``attempts`` and ``host``.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    os.environ.update(pinned or {})
    os.environ.pop(OVERRIDES_ENV_VAR, None)
    os.environ.setdefault("MPLBACKEND", "Agg")
    start = time.perf_counter()
    attempts, error, executed = 0, None, None
    with tempfile.TemporaryDirectory(prefix="ex3-sweep-") as tmp:
        out = Path(tmp) / "out.ipynb"
        while True:
            attempts += 1
            try:
                nb = papermill.execute_notebook(
                    nbformat.reads(notebook_text, as_version=4), str(out), parameters=parameters,
                    progress_bar=False, request_save_on_cell_execute=False,
                    start_timeout=start_timeout, cwd=cwd)
                executed, error = nbformat.writes(nb), None
                break
            except PapermillExecutionError as err:
                # A cell raised: papermill saved the notebook with the error in it.
                error = f"{err.ename}: {err.evalue} (in the cell executed {_ordinal(err.exec_count)})"
                executed = out.read_text(encoding="utf-8") if out.exists() else None
                break
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
                executed = out.read_text(encoding="utf-8") if out.exists() else None
                if attempts > retries or not _TRANSIENT.search(error):
                    break
    results = glued_values(nbformat.reads(executed, as_version=4)) if executed else {}
    return {"status": "ok" if error is None else "failed", "error": error, "results": results,
            "notebook": executed, "seconds": time.perf_counter() - start, "attempts": attempts,
            "host": socket.gethostname()}


def _ordinal(n) -> str:
    """``1st``, ``2nd``, ``11th``, ...; ``last`` when papermill gives no number."""
    if not isinstance(n, int):
        return "last"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def glued_values(nb) -> dict:
    """The scalars a notebook glued with ``myst_nb.glue``: name -> number, text, bool or None.

    Figures, tables and other rich values are left out; a value glued twice keeps the last.

    Parameters
    ----------
    nb : nbformat.NotebookNode
        An executed notebook.

    Returns
    -------
    dict
        Glued name -> value, in the order they were first glued.
    """
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            meta = output.get("metadata", {}).get("scrapbook") or {}
            name = meta.get("name")
            # glue(..., display=False) prefixes the MIME types with application/papermill.record/.
            prefix = meta.get("mime_prefix") or ""
            data = {key[len(prefix):] if key.startswith(prefix) else key: value
                    for key, value in output.get("data", {}).items()}
            if not name or set(data) != {"text/plain"}:
                continue
            text = data["text/plain"]
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(text, None)
                if value is None:
                    continue
            if isinstance(value, (bool, int, float, str)) or value is None:
                values[name] = value
    return values


def point_identity(notebook_bytes: bytes) -> dict:
    """What a point's result depends on besides its parameters: the notebook and the library.

    Parameters
    ----------
    notebook_bytes : bytes
        The notebook file's content.

    Returns
    -------
    dict
        ``notebook_sha256``, ``ex3lib_fingerprint`` (:func:`ex3lib.fingerprint.chapter_fingerprint`)
        and ``version`` (:data:`RECORD_VERSION`); every record holds these keys.
    """
    # Plots and sliders count here: a point's results are a whole executed chapter.
    return {"notebook_sha256": hashlib.sha256(notebook_bytes).hexdigest(),
            "ex3lib_fingerprint": chapter_fingerprint(), "version": RECORD_VERSION}


class SweepFolder:
    """The sweep's folder, ``<out>/<chapter>/``: each point's record and executed notebook.

    (The CSV and the figure beside them are :mod:`ex3lib.sweep.results`'.)

    Parameters
    ----------
    root : pathlib.Path
        The folder.
    """

    def __init__(self, root: Path):
        self.root = root

    def record_path(self, point: Point) -> Path:
        """``<root>/<point>.json``, the point's record."""
        return self.root / f"{point.name}.json"

    def notebook_path(self, point: Point) -> Path:
        """``<root>/<point>.ipynb``, the point's executed notebook."""
        return self.root / f"{point.name}.ipynb"

    def read_record(self, point: Point):
        """The point's record, validated; None if it has none.

        A record that cannot be read, is not UTF-8 JSON, has a field missing,
        unknown or of the wrong type, was written in another record format, or
        does not match its ``sha256`` (edited or damaged) is never trusted: it
        comes back as ``{"status": "unreadable", "problem": <what is wrong>}``,
        so the point runs again and its files are rewritten.
        """
        try:
            raw = self.record_path(point).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            return _unreadable(f"cannot be read: {err.strerror or err}")
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _unreadable("is not UTF-8 text")
        except (ValueError, RecursionError) as err:
            return _unreadable(f"is not valid JSON: {err}")
        problem = record_problem(record)
        return _unreadable(problem) if problem else record

    def write_point(self, point: Point, record: dict, notebook_json: str | None) -> None:
        """Write the point's executed notebook (unless None), then its record with its sha256, each atomically."""
        # The notebook first, the record last: a record that says "ok" always
        # has its notebook beside it.
        if notebook_json is not None:
            atomic_write(self.notebook_path(point), lambda f: f.write(notebook_json), mode="w")
        record = {**record, "sha256": record_checksum(record)}
        atomic_write(self.record_path(point),
                     lambda f: json.dump(record, f, indent=1, sort_keys=True, allow_nan=True),
                     mode="w")

    def remove_leftovers(self) -> int:
        """Delete temporary files a killed sweep left mid-write; returns how many."""
        n = 0
        for path in self.root.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                n += 1
        return n


def point_status(record, point: Point, identity: dict, outputs: SweepFolder):
    """Whether a point is complete: it finished ok with the same parameters, notebook and library.

    Parameters
    ----------
    record : dict or None
        The point's record, from :meth:`SweepFolder.read_record`.
    point : Point
    identity : dict
        The current :func:`point_identity`.
    outputs : SweepFolder

    Returns
    -------
    tuple
        ``("done", None)`` if the point can be skipped, else ``("todo", why)``:
        why it must run again, as a phrase (None if it never ran).
    """
    if record is None:
        return "todo", None
    if record.get("status") == "unreadable":
        return "todo", f"its record could not be read ({record.get('problem', 'unknown problem')})"
    if as_stored(record.get("parameters")) != as_stored(point.parameters):
        return "todo", PARAMETERS_CHANGED
    for key, what in (("notebook_sha256", "the notebook"), ("ex3lib_fingerprint", "the ex3lib source"),
                      ("version", "the record format")):
        if record.get(key) != identity[key]:
            return "todo", f"{what} changed since it ran"
    if record.get("status") != "ok":
        return "todo", "it failed last time"
    if not outputs.notebook_path(point).is_file():
        return "todo", "its executed notebook is missing"
    return "done", None


def record_checksum(record: dict) -> str:
    """The sha256 of a record's content: every field but ``sha256``, as canonical JSON."""
    content = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                     allow_nan=True).encode()).hexdigest()


def record_problem(record) -> str | None:
    """What is wrong with a point's record as read from its file (a phrase), or None if it is valid.

    Parameters
    ----------
    record
        The decoded JSON of a record file.

    Returns
    -------
    str or None
    """
    if not isinstance(record, dict):
        return f"is not a record (a JSON object), but a {type(record).__name__}"
    if record.get("version") != RECORD_VERSION:
        return f"was written in record format {record.get('version')!r}, not {RECORD_VERSION}"
    missing = [k for k in _RECORD_FIELDS if k not in record]
    unknown = sorted(str(k) for k in record if k not in _RECORD_FIELDS)
    if missing or unknown:
        return ("has " + ", ".join(([f"no {', '.join(missing)}"] if missing else [])
                                  + ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])))
    for key, types in _RECORD_FIELDS.items():
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"has a {key} of the wrong type ({type(value).__name__}: {value!r:.40})"
    if record["status"] not in _STATUSES:
        return f"has the status {record['status']!r}, not one of {', '.join(_STATUSES)}"
    bad = [name for name, value in record["results"].items()
           if value is not None and not isinstance(value, (bool, int, float, str))]
    if bad:
        return f"has a result {bad[0]!r} that is not a number, text, bool or null"
    if record["sha256"] != record_checksum(record):
        return "does not match its checksum (sha256): it was edited or damaged after it was written"
    return None


def _unreadable(problem: str) -> dict:
    """The stand-in :meth:`SweepFolder.read_record` returns for a record it cannot trust."""
    return {"status": "unreadable", "problem": problem}


def as_stored(obj):
    """``obj`` as it comes back from a record file (tuples as lists, keys as text)."""
    return json.loads(json.dumps(obj, sort_keys=True, allow_nan=True))
