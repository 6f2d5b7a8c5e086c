"""Argument checks shared by the public entry points: each error names the parameter and what is allowed."""

import difflib
import math
import numbers
import os

import numpy as np


def check_int(name, value, low, high=None):
    """``value`` as an int in ``[low, high]``; bools and floats are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{name} must be an integer {allowed}, got {value}")
    return value


def check_float(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite float within the given bounds (open or closed)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    allowed = f"a finite number in {lo or '(-inf'}, {hi or 'inf)'}"
    bad = (not math.isfinite(value)
           or (low is not None and (value <= low if low_open else value < low))
           or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def did_you_mean(value, choices) -> str:
    """`` (did you mean 'sgd'?)`` for a near miss of one of ``choices`` (strings), else ``""``."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(name, value, choices):
    """``value`` if it is one of ``choices`` (strings); a near miss gets a did-you-mean."""
    if not isinstance(value, str) or value not in choices:
        shown = repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {shown}"
                         f"{did_you_mean(value, choices)}")
    return value


def check_path(name, value, *, optional=True):
    """``value`` if it is a path (str or os.PathLike), or None when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, os.PathLike)):
        allowed = "a path (str or os.PathLike)" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    return value


def check_widths(name, value, *, min_len=2):
    """``value`` as a tuple of int widths >= 1 (input to output), at least ``min_len`` of them."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of layer widths from input to output, "
                        f"e.g. (784, 300, 100, 100, 10); got {value!r} ({type(value).__name__})")
    widths = tuple(check_int(name, w, 1) for w in value)
    if len(widths) < min_len:
        raise ValueError(f"{name} must name at least an input and an output width, got {widths!r}")
    return widths


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_inputs(name, x, width):
    """A 2-D array of real, finite inputs with ``width`` columns."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{name} must have shape (n_samples, {width}), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers (float or integer dtype), got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_labels(name, y, n, n_classes):
    """Integer class labels ``0 <= y < n_classes``, one per sample."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the inputs, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} must hold labels from 0 to {n_classes - 1}, "
                         f"got values from {y.min()} to {y.max()}")
    return y
