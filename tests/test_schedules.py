import math

import pytest

from ex3lib import make_batch_schedule, make_schedule


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


def test_constant_batch_schedule():
    s = make_batch_schedule("constant", 7, epochs=4)
    assert [s.batch_size_at(k) for k in range(4)] == [7] * 4
    assert make_batch_schedule("constant", 7, batch_final=7, epochs=4) == s


def test_increase_mirrors_the_report_decay():
    # 1/m_k = (1 - k/N)/m_0 + (k/N)/m_N with m_0 = 10, m_N = 1000, N = 10, by hand:
    # m_k = 100000 / (10000 - 990 k) = 10, 11.10, 12.47, 14.22, 16.56, 19.80, 24.63, 32.57, 48.08, 91.74
    s = make_batch_schedule("increase", 10, batch_final=1000, epochs=10)
    assert [s.batch_size_at(k) for k in range(10)] == [10, 11, 12, 14, 17, 20, 25, 33, 48, 92]
    # ... which is m_0 η_0 / η_k for Eq. 5's decay from η_0 = 0.1 to η_N = m_0 η_0 / m_N = 0.001.
    decay = make_schedule("linear_decay", 0.1, lr_final=0.001, epochs=10)
    assert [s.batch_size_at(k) for k in range(10)] == [round(10 * 0.1 / decay.learning_rate_at(k))
                                                      for k in range(10)]


def test_increase_rounds_halves_up_and_stops_at_the_training_set():
    # m_0 = 1, m_N = 3, N = 2: m_1 = 1 / (1/2 + 1/6) = 1.5 exactly
    assert make_batch_schedule("increase", 1, batch_final=3, epochs=2).batch_size_at(1) == 2
    s = make_batch_schedule("increase", 10, batch_final=1000, epochs=10, n_train=40)
    assert [s.batch_size_at(k) for k in range(10)] == [10, 11, 12, 14, 17, 20, 25, 33, 40, 40]
    same = make_batch_schedule("increase", 10, batch_final=10, epochs=3)
    assert [same.batch_size_at(k) for k in range(3)] == [10, 10, 10]


@pytest.mark.parametrize("args, kwargs, exc, message", [
    (("grow", 10), {"batch_final": 100}, ValueError,
     r"batch_schedule must be one of 'constant', 'increase'; got 'grow'"),
    (("increase", 10), {}, ValueError, "batch_final"),
    (("increase", 10), {"batch_final": 5}, ValueError, "batch_final must be at least batch_size=10"),
    (("increase", 10), {"batch_final": 0}, ValueError, "batch_final must be an integer >= 1"),
    (("increase", 10), {"batch_final": 100.0}, TypeError, "batch_final must be an integer"),
    (("increase", 0), {"batch_final": 100}, ValueError, "batch_size must be an integer >= 1"),
    (("increase", -5), {"batch_final": 100}, ValueError, "batch_size"),
    (("constant", 10), {"batch_final": 100}, ValueError, "batch_final applies to batch_schedule 'increase' only"),
    (("increase", 10), {"batch_final": 100, "epochs": 0}, ValueError, "epochs"),
    (("increase", 10), {"batch_final": 100, "n_train": 5}, ValueError,
     r"batch_size must be from 1 to the number of training samples \(5\)"),
    (("increase", 10), {"batch_final": 100, "n_train": 0}, ValueError, "n_train"),
])
def test_bad_batch_schedule_arguments(args, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        make_batch_schedule(*args, **kwargs)


def test_batch_schedule_epoch_out_of_range():
    with pytest.raises(ValueError, match="epoch"):
        make_batch_schedule("increase", 10, batch_final=100, epochs=3).batch_size_at(3)
