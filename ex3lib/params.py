"""A chapter's notebook parameters, checked in its first code cell with the library's messages.

A chapter's papermill ``parameters`` cell holds literals only; whatever
papermill, a sweep or a reader puts there (``-p batch_size ten``,
``-p n_seeds 0``) is checked before anything runs, by the same checks the
library applies to its own arguments, so the error names the notebook
parameter the reader passed (``n_seeds``), not an argument of some function it
reaches later (``seeds``)::

    import ex3lib
    ex3lib.chapter_parameters(globals(), "sgd")  # check_parameters, after $EX3_BOOK_PARAMETERS's values

Where papermill does not run a chapter (``jupyter-book build``, ``pytest
--nbval``), :data:`OVERRIDES_ENV_VAR` gives it parameter values instead.

:data:`CHAPTERS` holds each chapter's rules, built from the rules below; a
rule for one of the library's hyper-parameters (:data:`LEARNING_RATE`,
:data:`BATCH_SIZE`, ...) allows what :class:`ex3lib.RunConfig` allows.

>>> check_parameters({"epochs": 1, "n_seeds": 0}, {"epochs": EPOCHS, "n_seeds": N_SEEDS})
Traceback (most recent call last):
...
ValueError: n_seeds must be an integer >= 1, got 0
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from ._validate import check_bool, check_choice, check_float, check_int, did_you_mean
from .data import N_TRAIN

__all__ = ["BATCH_SIZE", "CHAPTERS", "EPOCHS", "EXPLORER", "LEARNING_RATE", "LR_FINAL", "MOMENTUM", "N_SEEDS", "ORDER",
           "OVERRIDES_ENV_VAR", "Rule", "SEED", "STEP", "TRAIN_SIZE", "chapter_parameters", "check_parameters",
           "choice", "environment_parameters", "flag", "integer", "list_of", "real"]


@dataclass(frozen=True)
class Rule:
    """What one parameter may be; build one with :func:`integer`, :func:`real`, :func:`choice`,
    :func:`flag` or :func:`list_of`.

    Attributes
    ----------
    kind : str
        ``"integer"``, ``"real"``, ``"choice"``, ``"flag"`` or ``"list"``.
    options : tuple
        The bounds or choices of the kind (see the builders).
    """

    kind: str
    options: tuple = ()

    def check(self, name: str, value):
        """``value`` checked (and as the library canonicalises it, e.g. 1 -> 1.0 for a real), or raise.

        Raises
        ------
        TypeError, ValueError
            With the library's message, which names ``name``.
        """
        if self.kind == "integer":
            low, high = self.options
            return check_int(name, value, low, high)
        if self.kind == "real":
            low, high, low_open, high_open = self.options
            return check_float(name, value, low=low, high=high, low_open=low_open, high_open=high_open)
        if self.kind == "choice":
            return check_choice(name, value, self.options)
        if self.kind == "flag":
            return check_bool(name, value)
        item, min_len = self.options
        if isinstance(value, str):
            raise TypeError(f"{name} must be a list, got the text {value!r}: papermill's -p passes "
                            f"text; give a list with -y \"{name}: [...]\" (or the sweep's -p {name} [...])")
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list, got {value!r} ({type(value).__name__})")
        if len(value) < min_len:
            raise ValueError(f"{name} must list at least {min_len} value(s), got {list(value)!r}")
        return [item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]


def integer(low: int, high: int | None = None) -> Rule:
    """An integer from ``low`` to ``high`` (None: no upper bound); bools and floats are refused."""
    return Rule("integer", (low, high))


def real(low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False) -> Rule:
    """A finite real number within the bounds, open or closed; integers are taken as floats."""
    return Rule("real", (low, high, low_open, high_open))


def choice(*options: str) -> Rule:
    """One of the texts ``options`` (a near miss gets a did-you-mean)."""
    return Rule("choice", tuple(options))


def flag() -> Rule:
    """True or False."""
    return Rule("flag")


def list_of(item: Rule, *, min_len: int = 0) -> Rule:
    """A list (or tuple) of at least ``min_len`` values, each checked by ``item`` (named ``name[i]``)."""
    if not isinstance(item, Rule):
        raise TypeError(f"item must be a Rule, got {type(item).__name__}")
    return Rule("list", (item, check_int("min_len", min_len, 0)))


#: η (or η₀), as RunConfig allows it: a finite number > 0.
LEARNING_RATE = real(0.0, low_open=True)
#: η_N of a linear decay: a finite number > 0.
LR_FINAL = real(0.0, low_open=True)
#: m: from 1 (on-line) to the 60,000 training images.
BATCH_SIZE = integer(1, N_TRAIN)
#: Epochs of a run: at least 1.
EPOCHS = integer(1)
#: α of momentum: in [0, 1).
MOMENTUM = real(0.0, 1.0, high_open=True)
#: Training images used: at least 1 (60,000 or more: all of them).
TRAIN_SIZE = integer(1)
#: How many seeds each setting runs with: at least 1.
N_SEEDS = integer(1)
#: A seed: an integer >= 0.
SEED = integer(0)
#: The sample order of an epoch.
ORDER = choice("sequential", "shuffle")
#: A finite-difference step h: a finite number > 0.
STEP = real(0.0, low_open=True)

#: Whether an experiment chapter shows its page explorer (:func:`ex3lib.pages.explorer`).
EXPLORER = flag()

_GRID_LEARNING_RATES = list_of(LEARNING_RATE, min_len=1)
_GRID_BATCH_SIZES = list_of(BATCH_SIZE, min_len=1)

#: Each chapter's parameters (``book/<chapter>.ipynb``'s ``parameters`` cell) and their rules.
CHAPTERS = {
    "intro": {
        "n_samples_shown": integer(1, N_TRAIN), "seed": SEED,
    },
    "sgd": {
        "epochs": EPOCHS, "learning_rate": LEARNING_RATE, "batch_size": BATCH_SIZE,
        # The SGD chapter skips its grid when either list is empty.
        "learning_rates": list_of(LEARNING_RATE), "batch_sizes": list_of(BATCH_SIZE),
        "n_seeds": N_SEEDS, "train_size": TRAIN_SIZE, "long_epochs": integer(0), "order": ORDER,
        "explorer": EXPLORER,
    },
    "gradients": {
        "learning_rate": LEARNING_RATE, "batch_size": BATCH_SIZE, "epochs": EPOCHS, "h": STEP,
        "sample_index": integer(0, N_TRAIN - 1), "n_samples": integer(1, N_TRAIN), "seed": SEED,
        "h_per_decade": integer(1),
    },
    "decay": {
        "epochs": EPOCHS, "learning_rate": LEARNING_RATE, "lr_finals": list_of(LR_FINAL, min_len=1),
        "batch_sizes": _GRID_BATCH_SIZES, "extra_lr_final": LR_FINAL,
        "extra_learning_rate": LEARNING_RATE, "extra_batch_size": BATCH_SIZE, "n_seeds": N_SEEDS,
        "train_size": TRAIN_SIZE, "explorer": EXPLORER,
    },
    "momentum": {
        "epochs": EPOCHS, "learning_rates": _GRID_LEARNING_RATES, "batch_sizes": _GRID_BATCH_SIZES,
        "momentum": MOMENTUM, "momentums": list_of(MOMENTUM, min_len=1),
        "sweep_learning_rate": LEARNING_RATE, "sweep_batch_size": BATCH_SIZE,
        "nesterov_batch_sizes": _GRID_BATCH_SIZES, "learning_rate": LEARNING_RATE, "lr_final": LR_FINAL,
        "n_seeds": N_SEEDS, "n_seeds_grid": N_SEEDS, "train_size": TRAIN_SIZE, "explorer": EXPLORER,
    },
    "adaptive": {
        "epochs": EPOCHS, "learning_rates": _GRID_LEARNING_RATES, "batch_sizes": _GRID_BATCH_SIZES,
        "adam_learning_rate": LEARNING_RATE, "rmsprop_learning_rate": LEARNING_RATE,
        "comparison_batch_size": BATCH_SIZE, "n_seeds": N_SEEDS, "n_seeds_grid": N_SEEDS,
        "train_size": TRAIN_SIZE, "explorer": EXPLORER,
    },
    "protocol": {
        "epochs": EPOCHS, "n_seeds": integer(2), "targets": list_of(real(0.0, 1.0, low_open=True), min_len=1),
        "sharpness_seeds": integer(2), "hessian_images": integer(1, N_TRAIN),
        "epsilon": real(0.0, low_open=True), "schedule_seeds": integer(2), "train_size": TRAIN_SIZE,
    },
    "conclusion": {
        "epochs": EPOCHS, "learning_rates": _GRID_LEARNING_RATES, "batch_sizes": _GRID_BATCH_SIZES,
        "decay_learning_rate": LEARNING_RATE, "lr_final": LR_FINAL, "n_seeds": N_SEEDS, "n_seeds_grid": N_SEEDS,
        "protocol_seeds": integer(2), "sharpness_seeds": integer(2), "hessian_images": integer(1, N_TRAIN),
        "epsilon": real(0.0, low_open=True), "schedule_seeds": integer(2), "train_size": TRAIN_SIZE,
    },
}


def check_parameters(namespace, spec) -> dict:
    """Check a chapter's parameters, raising the library's error for the first one that is wrong.

    Parameters
    ----------
    namespace : mapping or object
        Where the parameters are: a chapter's ``globals()``, a dict, or an
        object with them as attributes.
    spec : str or mapping of str to Rule
        A chapter's name (a key of :data:`CHAPTERS`, e.g. ``"sgd"``) or the
        rules themselves, parameter name -> :class:`Rule`; checked in order.

    Returns
    -------
    dict
        Parameter name -> checked value (integers given for reals as floats,
        tuples as lists); the namespace itself is left as it is.

    Raises
    ------
    TypeError, ValueError
        A parameter is of the wrong type or out of range (the message names
        it and says what is allowed), or is missing from ``namespace``.

    Examples
    --------
    >>> check_parameters({"batch_size": "ten"}, {"batch_size": BATCH_SIZE})
    Traceback (most recent call last):
    ...
    TypeError: batch_size must be an integer, got 'ten' (str)
    >>> check_parameters({"order": "shufle"}, {"order": ORDER})
    Traceback (most recent call last):
    ...
    ValueError: order must be one of 'sequential', 'shuffle'; got 'shufle' (did you mean 'shuffle'?)
    """
    if isinstance(spec, str):
        spec = CHAPTERS[check_choice("spec", spec, tuple(CHAPTERS))]
    if not isinstance(spec, Mapping) or not all(isinstance(r, Rule) for r in spec.values()):
        raise TypeError("spec must be a chapter's name or a mapping of parameter names to ex3lib.params "
                        "rules (integer, real, choice, flag, list_of)")
    missing = object()
    checked = {}
    for name, rule in spec.items():
        value = (namespace.get(name, missing) if isinstance(namespace, Mapping)
                 else getattr(namespace, name, missing))
        if value is missing:
            raise ValueError(f"the parameter {name} is not defined: the chapter's parameters cell must "
                             f"set it")
        checked[name] = rule.check(name, value)
    return checked


#: Parameter values that replace those of the chapters' ``parameters`` cells, as papermill's ``-p`` would, where
#: papermill does not run the chapters (``jupyter-book build``, ``pytest --nbval``): a JSON object, e.g.
#: ``EX3_BOOK_PARAMETERS='{"train_size": 10000}'``. CI sets it (``.ci/run``); each chapter takes the values of
#: the parameters it has.
OVERRIDES_ENV_VAR = "EX3_BOOK_PARAMETERS"


def environment_parameters() -> dict:
    """The parameter values of ``$EX3_BOOK_PARAMETERS`` (an empty dict when it is unset or empty), each checked.

    Raises
    ------
    ValueError, TypeError
        The variable is not a JSON object, names a parameter no chapter has,
        or gives a value that a chapter with that parameter refuses (the
        message names the parameter and the variable).

    Examples
    --------
    >>> import os
    >>> os.environ["EX3_BOOK_PARAMETERS"] = '{"train_size": 10000}'
    >>> environment_parameters()
    {'train_size': 10000}
    >>> os.environ["EX3_BOOK_PARAMETERS"] = '{"train_sise": 10000}'
    >>> environment_parameters()
    Traceback (most recent call last):
    ...
    ValueError: EX3_BOOK_PARAMETERS names train_sise, which no chapter has (did you mean 'train_size'?); the chapters' parameters are ...
    >>> del os.environ["EX3_BOOK_PARAMETERS"]
    """
    text = os.environ.get(OVERRIDES_ENV_VAR, "").strip()
    if not text:
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{OVERRIDES_ENV_VAR} must be a JSON object of parameter values, e.g. "
                         f"'{{\"train_size\": 10000}}'; got {text!r} ({exc.msg})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{OVERRIDES_ENV_VAR} must be a JSON object of parameter values, e.g. "
                         f"'{{\"train_size\": 10000}}'; got {text!r}")
    known = sorted({name for rules in CHAPTERS.values() for name in rules})
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"{OVERRIDES_ENV_VAR} names {name}, which no chapter has"
                             f"{did_you_mean(name, known)}; the chapters' parameters are {', '.join(known)}")
        for chapter, rules in CHAPTERS.items():
            if name in rules:
                try:
                    rules[name].check(name, value)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"{OVERRIDES_ENV_VAR}: {exc} (chapter {chapter})") from None
    return values


def chapter_parameters(namespace, chapter: str) -> dict:
    """A chapter's parameters, with ``$EX3_BOOK_PARAMETERS``'s values in place of its own, checked.

    What a chapter's set-up cell calls with its ``globals()``: the values of
    :func:`environment_parameters` that name one of the chapter's parameters
    replace those of its ``parameters`` cell in ``namespace`` (a line printed
    under the cell says which), after papermill's own values if papermill ran
    it; then :func:`check_parameters` checks them all.

    Returns
    -------
    dict
        As :func:`check_parameters`.

    Examples
    --------
    >>> chapter_parameters({"n_samples_shown": 40, "seed": 0}, "intro")
    {'n_samples_shown': 40, 'seed': 0}
    """
    if not isinstance(namespace, MutableMapping):
        raise TypeError(f"namespace must be a chapter's globals() (a mutable mapping), got "
                        f"{type(namespace).__name__}")
    rules = CHAPTERS[check_choice("chapter", chapter, tuple(CHAPTERS))]
    changed = {name: value for name, value in environment_parameters().items() if name in rules}
    if changed:
        was = ", ".join(f"{name} = {value!r} (its parameters cell: {namespace.get(name)!r})"
                        for name, value in changed.items())
        print(f"Run with {OVERRIDES_ENV_VAR}: {was}.")
        namespace.update(changed)
    return check_parameters(namespace, rules)
