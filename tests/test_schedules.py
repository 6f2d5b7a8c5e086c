import math

import pytest

from ex3lib import make_schedule


def test_constant():
    s = make_schedule("constant", 0.01, epochs=5)
    assert [s.learning_rate_at(k) for k in range(5)] == [0.01] * 5


def test_linear_decay_is_report_eq5():
    s = make_schedule("linear_decay", 0.1, lr_final=0.001, epochs=10)
    # eta_k = eta_0 (1 - k/N) + (k/N) eta_N, by hand:
    assert s.learning_rate_at(0) == 0.1
    assert math.isclose(s.learning_rate_at(1), 0.1 * 0.9 + 0.1 * 0.001)
    assert math.isclose(s.learning_rate_at(5), 0.0505)
    assert math.isclose(s.learning_rate_at(9), 0.0109)


def test_schedule_is_a_pure_function_of_the_epoch():
    s = make_schedule("linear_decay", 0.1, lr_final=0.0001, epochs=4)
    first = [s.learning_rate_at(k) for k in (3, 0, 2, 1)]
    assert first == [s.learning_rate_at(k) for k in (3, 0, 2, 1)]


@pytest.mark.parametrize("args, kwargs, exc, word", [
    (("cosine", 0.1), {}, ValueError, "schedule"),
    (("constant", 0.0), {}, ValueError, "learning_rate"),
    (("constant", float("nan")), {}, ValueError, "learning_rate"),
    (("constant", "0.1"), {}, TypeError, "learning_rate"),
    (("constant", 0.1), {"epochs": 0}, ValueError, "epochs"),
    (("constant", 0.1), {"lr_final": 0.01}, ValueError, "lr_final"),
    (("linear_decay", 0.1), {}, ValueError, "lr_final"),
    (("linear_decay", 0.1), {"lr_final": -1.0}, ValueError, "lr_final"),
])
def test_bad_schedule_arguments(args, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        make_schedule(*args, **kwargs)


def test_epoch_out_of_range():
    with pytest.raises(ValueError, match="epoch"):
        make_schedule("constant", 0.1, epochs=3).learning_rate_at(3)
