import numpy as np

from ex3lib import book


def test_glue_all_glues_numbers_and_texts_only(monkeypatch):
    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.setdefault(name, (value, display)))
    book.glue_all({"a": 1, "b": 0.5, "c": "x", "d": np.float64(2.0), "e": [1], "f": True, "g": {"h": 1}}, "p_")
    assert glued == {"p_a": (1, False), "p_b": (0.5, False), "p_c": ("x", False)}
    book.glue_all({"a": 1, "b": 2}, keys=["b"])
    assert "b" in glued and "a" not in glued


def test_train_subset_and_report_scale(capsys):
    assert book.train_subset(60000) is None and book.train_subset(6000) == 6000
    assert book.report_scale(10, 60000) and not book.report_scale(1, 60000) and not book.report_scale(10, 6000)
    book.skip("Fig. 3", "no long run")
    assert capsys.readouterr().out == "Fig. 3 skipped: no long run\n"
