"""A results store on disk: training histories keyed by run config and library source.

A finished :func:`ex3lib.run` is saved as JSON under a key derived from its
:class:`RunConfig` and the :func:`~ex3lib.fingerprint.source_fingerprint` of
the source training depends on and of the numpy, Numba and Python versions.
Any edit to that code therefore changes every key, so a result computed by
older code is never returned; an edit to a module training does not import (a
chapter's analysis, a figure) keeps them. :func:`ex3lib.run_many`
(:mod:`ex3lib.runner`) looks runs up here first and trains only the missing
ones.

>>> import ex3lib
>>> store = ex3lib.ResultsStore()
>>> config = ex3lib.RunConfig(epochs=1)
>>> store.put(config, ex3lib.run(config, ex3lib.load_mnist()))     # doctest: +SKIP
>>> store.get(config).config["epochs"]                             # doctest: +SKIP
1
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import platformdirs

from .fingerprint import source_fingerprint
from .sysutil import atomic_write
from .training import History, RunConfig, _decode_json, _encode_json

__all__ = ["FORMAT", "RESULTS_ENV_VAR", "ResultsStore"]

RESULTS_ENV_VAR = "EX3_RESULTS_DIR"
#: The result files' format: 2 added the ``sha256`` of the content and
#: non-finite numbers as the texts "nan", "inf" and "-inf" (see History.to_dict).
FORMAT = 2
_FIELDS = ("format", "fingerprint", "config", "history", "sha256")

_KEY_RE = re.compile(r"[0-9a-f]{64}")


class ResultsStore:
    """Training histories on disk, one JSON file per run config and library version.

    A run's key is the sha256 of its config and of :func:`source_fingerprint`;
    its history lives in ``<root>/<key[:2]>/<key>.json``, with the sha256 of
    its content. Files are written atomically and validated when read: a file
    that is unreadable, not UTF-8, not JSON, of the wrong shape (a field
    missing, unknown or of the wrong type), of another format, fingerprint or
    config, or whose content does not match its checksum (edited by hand or
    damaged) counts as missing, with a warning, so :meth:`get` never returns a
    result that may be stale or wrong, and the next :meth:`put` replaces it.
    Non-finite numbers (nan, +inf, -inf) come back as they were stored. A run
    with ``keep_params`` also keeps its final parameters in
    ``<key>.params.npy`` beside its result, whose sha256 the result file
    holds: a missing, damaged or replaced parameters file makes the result a
    miss too. Only JSON and ``.npy`` arrays are read, never pickle, so a store
    from elsewhere cannot run code.

    Parameters
    ----------
    root : str or path-like, optional
        Folder of the store; defaults to ``$EX3_RESULTS_DIR``, then
        ``<user cache folder>/ex3/results``. Created on the first :meth:`put`;
        an existing file there is refused (ValueError).

    Examples
    --------
    >>> from ex3lib import load_mnist, run
    >>> store = ResultsStore("/tmp/ex3-results")                    # doctest: +SKIP
    >>> config = RunConfig(epochs=1)
    >>> store.put(config, run(config, load_mnist()))                 # doctest: +SKIP
    >>> config in store, store.get(config).config["epochs"]          # doctest: +SKIP
    (True, 1)
    """

    def __init__(self, root: str | os.PathLike | None = None):
        origin = "root"
        if root is None:
            if os.environ.get(RESULTS_ENV_VAR):
                origin = f"${RESULTS_ENV_VAR}"
            root = os.environ.get(RESULTS_ENV_VAR) or Path(platformdirs.user_cache_dir("ex3")) / "results"
        elif not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
        self.root = Path(root).expanduser()
        for candidate in (self.root, *self.root.parents):
            if candidate.exists():
                if not candidate.is_dir():
                    raise ValueError(f"{origin} {str(self.root)!r} cannot hold a results store: "
                                     f"{candidate} is a file, not a folder")
                break
        self._warned: set[Path] = set()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    def key(self, config: RunConfig) -> str:
        """The store key of ``config`` with the current library source.

        Parameters
        ----------
        config : RunConfig

        Returns
        -------
        str
            64 hexadecimal digits.
        """
        _check_config("config", config)
        blob = json.dumps({"config": config.to_dict(), "fingerprint": source_fingerprint()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, config: RunConfig) -> Path:
        """The file that holds (or would hold) the result of ``config``."""
        key = self.key(config)
        return self.root / key[:2] / f"{key}.json"

    def get(self, config: RunConfig) -> History | None:
        """The stored history of ``config``, or None if there is no valid one.

        A file that cannot be read or decoded (UTF-8, then JSON), has another
        format, fingerprint or config, holds a malformed history, or whose
        content does not match its ``sha256`` is treated as missing, with one
        warning per file; the next :meth:`put` of the config replaces it.

        ``keep_params`` changes what a run keeps, not the run: a config
        without it that is not stored is answered by the same config stored
        with its parameters, as that run returned it but for the parameters
        (``params`` None, ``config["keep_params"]`` False), so a run that
        one chapter keeps the parameters of (the protocol chapter's sharpness
        runs, which the SGD chapter's grid also holds) is trained once.

        Parameters
        ----------
        config : RunConfig

        Returns
        -------
        History or None

        Examples
        --------
        >>> ResultsStore("/tmp/ex3-empty").get(RunConfig()) is None      # doctest: +SKIP
        True
        """
        history = self._read(config)
        if history is None and not config.keep_params:
            history = self._read(config.replace(keep_params=True), with_params=False)
            if history is not None:
                history.config["keep_params"] = False
                history.extra.pop("params_sha256", None)
        return history

    def _read(self, config: RunConfig, with_params: bool = True) -> History | None:
        """:meth:`get` of exactly ``config``; ``with_params=False`` leaves a kept-parameters file unread."""
        path = self.path(config)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            return self._invalid(path, f"cannot be read ({err})")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return self._invalid(path, f"is not UTF-8 text ({err})")
        try:
            stored = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as err:
            return self._invalid(path, f"is not valid JSON ({err})")
        if (not isinstance(stored, dict) or stored.get("format") != FORMAT
                or sorted(stored) != sorted(_FIELDS)):
            return self._invalid(path, f"is not a format-{FORMAT} result file (an object with the "
                                       f"fields {', '.join(_FIELDS)})")
        if stored["fingerprint"] != source_fingerprint():
            return self._invalid(path, "was written by another version of ex3lib")
        # Through JSON and back, so that the comparison sees what a file can hold.
        if stored["config"] != json.loads(json.dumps(config.to_dict())):
            return self._invalid(path, "holds the result of another config")
        # The checksum first: an edited file is reported as edited, whatever the edit broke.
        if stored["sha256"] != _checksum(stored):
            return self._invalid(path, "does not match its checksum (sha256): it was edited or damaged "
                                       "after it was written")
        try:
            history = History.from_dict(stored["history"])
        except (ValueError, TypeError, OverflowError) as err:
            return self._invalid(path, f"holds a malformed history ({err})")
        if config.keep_params and with_params:
            params_path = _params_path(path)
            try:
                with params_path.open("rb") as f:
                    params = np.load(f, allow_pickle=False)
            except FileNotFoundError:
                return self._invalid(path, f"has lost its parameters file {params_path.name}")
            except (OSError, ValueError, EOFError) as err:
                return self._invalid(path, f"has an unreadable parameters file {params_path.name} ({err})")
            if history.extra.get("params_sha256") != _params_checksum(params):
                return self._invalid(path, f"has a parameters file {params_path.name} that does not match "
                                           f"its checksum (sha256): it was replaced or damaged")
            del history.extra["params_sha256"]  # as the run returned it
            history.params = params
        return history

    def put(self, config: RunConfig, history: History) -> None:
        """Save ``history`` as the result of ``config``, replacing any earlier one.

        The history is checked first (:meth:`History.to_dict`), so that what
        is stored is what :meth:`get` returns, non-finite numbers included.
        The file, with the sha256 of its content, is written to a temporary
        sibling and renamed over the target, so readers (and an interrupted
        write) never see a partial file.

        Parameters
        ----------
        config : RunConfig
        history : History

        Raises
        ------
        TypeError
            ``config`` is not a RunConfig or ``history`` not a History.
        ValueError
            ``history`` cannot be stored faithfully (e.g. an array in
            ``history.extra``, arrays of different lengths); the message names
            the field. Nothing is written.
        OSError
            The file could not be written; an earlier result of ``config`` is kept.

        These three are the only exceptions ``put`` raises (besides
        KeyboardInterrupt and the like).

        Examples
        --------
        >>> from ex3lib import load_mnist, run
        >>> config = RunConfig(epochs=1)
        >>> ResultsStore().put(config, run(config, load_mnist()))        # doctest: +SKIP
        """
        _check_config("config", config)
        if not isinstance(history, History):
            raise TypeError(f"history must be an ex3lib.History, got {type(history).__name__}")
        params = None
        if config.keep_params:
            params = history.params
            if not isinstance(params, np.ndarray) or params.ndim != 1 or params.dtype.kind != "f":
                raise ValueError(f"config keeps its parameters (keep_params=True), so history.params must "
                                 f"be a 1-D float array, got {type(params).__name__}")
        history_dict = history.to_dict()
        if params is not None:
            # The result file vouches for its parameters file through this checksum.
            history_dict["extra"]["params_sha256"] = _params_checksum(params)
        payload = {"format": FORMAT, "fingerprint": source_fingerprint(),
                   "config": json.loads(json.dumps(config.to_dict())), "history": history_dict}
        payload["sha256"] = _checksum(payload)
        path = self.path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        if params is not None:
            # Parameters first: a result file is never written without the parameters it names.
            atomic_write(_params_path(path), lambda f: np.save(f, params, allow_pickle=False))
        # allow_nan=False cannot fail: History.to_dict wrote every non-finite number as text.
        atomic_write(path, lambda f: json.dump(payload, f, allow_nan=False), "w")
        self._warned.discard(path)

    def get_measurement(self, kind: str, key: dict) -> dict | None:
        """A measurement stored by :meth:`put_measurement` under ``kind`` and ``key``, or None.

        For results that take long to compute from stored runs (the Hessian
        measurements of :func:`ex3lib.protocol.sharpness_measurements`). The
        ``key`` (JSON data) must name everything the result depends on: the
        run's store key, the settings, and the fingerprint of the code (e.g.
        :func:`ex3lib.fingerprint.module_fingerprint`). A damaged, edited or
        unreadable file counts as missing, with a warning, as in :meth:`get`.
        """
        path = self._measurement_path(kind, key)
        try:
            stored = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as err:
            return self._invalid(path, f"cannot be read as JSON ({err})")
        if (not isinstance(stored, dict) or sorted(stored) != ["key", "kind", "sha256", "value"]
                or stored["sha256"] != _checksum(stored)
                or stored["key"] != json.loads(json.dumps(key)) or stored["kind"] != kind):
            return self._invalid(path, "is not the measurement it is named after, or does not match its "
                                       "checksum (sha256)")
        return _decode_json(stored["value"])

    def put_measurement(self, kind: str, key: dict, value: dict) -> None:
        """Save ``value`` (a dict of JSON data; non-finite numbers allowed) as the measurement ``kind``, ``key``.

        Written atomically, with the sha256 of its content; raises ValueError
        for what JSON cannot hold, OSError when the file cannot be written.
        """
        if not isinstance(value, dict):
            raise TypeError(f"value must be a dict, got {type(value).__name__}")
        payload = {"kind": kind, "key": json.loads(json.dumps(key)),
                   "value": _encode_json(f"measurement {kind}", value)}
        payload["sha256"] = _checksum(payload)
        path = self._measurement_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: json.dump(payload, f, allow_nan=False), "w")

    def _measurement_path(self, kind: str, key: dict) -> Path:
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
            raise ValueError(f"kind must be a lower-case name such as 'sharpness', got {kind!r}")
        digest = hashlib.sha256(json.dumps([kind, key], sort_keys=True).encode()).hexdigest()
        return self.root / "measurements" / kind / f"{digest}.json"

    def __contains__(self, config) -> bool:
        """Whether :meth:`get` would return a history for ``config``."""
        return isinstance(config, RunConfig) and self.get(config) is not None

    def __len__(self) -> int:
        """The number of result files, including those of other ex3lib versions."""
        return sum(1 for _ in self._files())

    def histories(self):
        """Every run stored for the current ex3lib version, as ``(config, history)`` pairs, in no fixed order.

        What :meth:`get` would return for each result file, but that the
        parameters of runs with ``keep_params`` are not read (``history.params``
        is None, and a lost parameters file goes unnoticed here). Files of other ex3lib versions
        are skipped without a word (the store keeps them until cleared); a
        file of this version that :meth:`get` would refuse, or that is not
        named after its own config, is skipped with a warning.

        Yields
        ------
        (RunConfig, History)
        """
        for path in self._files():
            try:
                stored = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
                fingerprint, config = stored["fingerprint"], RunConfig.from_dict(stored["config"])
            except (OSError, UnicodeDecodeError, ValueError, RecursionError, TypeError, KeyError) as err:
                self._invalid(path, f"cannot be read as a result file ({type(err).__name__}: {err})")
                continue
            if fingerprint != source_fingerprint():
                continue
            if self.path(config) != path:
                self._invalid(path, "is not named after the config it holds")
                continue
            history = self._read(config, with_params=False)
            if history is not None:
                history.extra.pop("params_sha256", None)
                yield config, history

    def clear(self) -> int:
        """Delete every result file, kept parameters, measurement (and leftover temporary file) of the store.

        Only files named as the store names them are removed, so a root that
        also holds other files is safe to clear.

        Returns
        -------
        int
            The number of result files deleted.
        """
        removed = 0
        for path in list(self._files()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        for folder in self._folders():
            for params in folder.glob("*.params.npy"):
                if _KEY_RE.fullmatch(params.name.split(".")[0]):
                    with contextlib.suppress(FileNotFoundError):
                        params.unlink()
            for tmp in [*folder.glob(".*.json.*.tmp"), *folder.glob(".*.params.npy.*.tmp")]:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
        measurements = self.root / "measurements"
        kinds = [k for k in measurements.iterdir() if k.is_dir()] if measurements.is_dir() else []
        for kind in kinds:
            for path in [*kind.glob("*.json"), *kind.glob(".*.json.*.tmp")]:
                if _KEY_RE.fullmatch(path.name.split(".")[0] or path.name.split(".")[1]):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            with contextlib.suppress(OSError):
                kind.rmdir()
        with contextlib.suppress(OSError):
            measurements.rmdir()
        self._warned.clear()
        return removed

    def _folders(self):
        """The store's two-hex-digit subfolders (none if the root does not exist yet)."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if re.fullmatch(r"[0-9a-f]{2}", folder.name) and folder.is_dir():
                yield folder

    def _files(self):
        """Every file named as the store names its results, of any ex3lib version."""
        for folder in self._folders():
            for path in folder.glob("*.json"):
                if _KEY_RE.fullmatch(path.stem) and path.stem[:2] == folder.name:
                    yield path

    def _invalid(self, path: Path, problem: str) -> None:
        """Warn once per file that ``path`` is ignored because of ``problem``; returns None (a miss)."""
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"ignoring stored result {path}: it {problem}; the run will be repeated",
                          stacklevel=3)
        return None


def _check_config(name, config):
    """Raise TypeError, naming the argument ``name``, unless ``config`` is a RunConfig."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"{name} must be an ex3lib.RunConfig, got {type(config).__name__}")


def _refuse_constant(name):
    """For json.loads: NaN and Infinity are not JSON (a result file writes them as text)."""
    raise ValueError(f"{name} is not JSON")


def _params_path(path: Path) -> Path:
    """The parameters file beside a result file (runs with ``keep_params``)."""
    return path.with_name(path.stem + ".params.npy")


def _params_checksum(params: np.ndarray) -> str:
    """The sha256 of a parameter vector's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{params.dtype.str}{params.shape}".encode())
    digest.update(np.ascontiguousarray(params).tobytes())
    return digest.hexdigest()


def _checksum(stored: dict) -> str:
    """The sha256 of a result file's content: every field but ``sha256``, as canonical JSON."""
    content = {k: v for k, v in stored.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                     allow_nan=False).encode()).hexdigest()
