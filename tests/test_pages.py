"""The explorers of the static pages (ex3lib.pages): grids, the data they carry, the element they make."""

import json
import math
import re

import numpy as np
import pytest
from synthetic import dead, hist, overflow

from ex3lib import MLP, RunConfig, gradcheck, pages, protocol
from ex3lib.book import train_subset
from ex3lib.experiments import grid


def _runs(g, fail=lambda c: None):
    """Synthetic histories for every run of grid ``g``: accuracy from the config, ``fail(c)`` replaces some."""
    out = {}
    for c in g.configs():
        fields = c.to_dict()
        fields.pop("seed")
        made = fail(c)
        out[c] = made(**fields) if made else hist(0.9 + 0.05 * math.tanh(math.log10(c.learning_rate) + 2), **fields)
    return out


def _payload(name, fail=lambda c: None):
    g = pages.GRIDS[name]
    return g, pages.runs_payload(g, _runs(g, fail))


def test_grids_cover_what_the_site_promises():
    sgd = pages.GRIDS["sgd"]
    etas = [fields["learning_rate"] for _, fields in sgd.rows.choices]
    assert len(etas) >= 9 and min(etas) == 1e-4 and max(etas) == 1.0
    assert {1, 2, 5, 10, 20, 50, 100} <= {fields["batch_size"] for _, fields in sgd.columns.choices}
    assert len(pages.GRIDS["decay"].rows.choices) >= 4 and len(pages.GRIDS["decay"].columns.choices) >= 3
    alphas = {fields["momentum"] for _, fields in pages.GRIDS["momentum"].rows.choices}
    assert {0.0, 0.5, 0.9, 0.95, 0.99} <= alphas
    methods = {(f["optimiser"], f.get("momentum", 0.0)) for _, f in pages.GRIDS["adaptive"].rows.choices}
    assert methods == {("sgd", 0.0), ("sgd", 0.9), ("adagrad", 0.0), ("rmsprop", 0.0), ("adam", 0.0)}
    for name in ("decay", "momentum", "adaptive"):
        g = pages.GRIDS[name]
        assert {c.batch_size for c in g.configs()} == {10}, name
        assert len(g.rows.choices if name == "decay" else g.columns.choices) >= (4 if name == "decay" else 6)
    for g in pages.GRIDS.values():
        assert {c.epochs for c in g.configs()} == {10} and {c.seed for c in g.configs()} == {0}


def test_configs_hold_every_cell_and_baseline_once():
    for g in pages.GRIDS.values():
        configs = g.configs()
        assert len(configs) == len(set(configs))
        assert set(g.cells()) <= set(configs)
        assert {g.baseline_of(c) for c in g.cells()} <= set(configs)
    sgd = pages.GRIDS["sgd"]
    assert sgd.configs() == sgd.cells(), "the reference setting is a cell of the SGD grid"
    decay = pages.GRIDS["decay"]
    constant = {decay.baseline_of(c) for c in decay.cells()}
    assert all(c.schedule == "constant" and c.lr_final == c.learning_rate for c in constant)
    assert constant <= set(sgd.cells()), "decay's constant baselines are runs of the SGD explorer"
    assert {pages.GRIDS["momentum"].baseline_of(c) for c in pages.GRIDS["momentum"].cells()} <= set(sgd.cells())


def test_cells_are_the_chapters_own_runs_where_they_coincide():
    # The chapters' default settings (book/sgd.ipynb etc.) as they build them: one store key each.
    common = dict(epochs=10, train_size=train_subset(60000), seeds=1)
    sgd_chapter = grid(learning_rate=[0.1, 0.01, 0.001], batch_size=[1, 10, 100], order="sequential", **common)
    assert set(sgd_chapter) <= set(pages.GRIDS["sgd"].cells())
    decay_chapter = grid(schedule="linear_decay", learning_rate=0.1, lr_final=0.001, batch_size=10, **common)
    assert set(decay_chapter) <= set(pages.GRIDS["decay"].cells())
    momentum_sweep = grid(momentum=[0.5, 0.9, 0.99], learning_rate=0.001, batch_size=10, optimiser="sgd", **common)
    assert set(momentum_sweep) <= set(pages.GRIDS["momentum"].cells())
    # The methods' explorer is the protocol chapter's tuning grid, under its validation split.
    tuning = grid(optimiser=["sgd", "adagrad", "rmsprop", "adam"], learning_rate=list(pages.LEARNING_RATES[:7]),
                  batch_size=10, validation_size=10_000, **common)
    assert set(tuning) <= set(pages.GRIDS["adaptive"].cells())
    assert all(c.validation_size == 10_000 for c in pages.GRIDS["adaptive"].configs())


def test_payload_maps_each_cell_to_its_run_and_baseline():
    g, payload = _payload("sgd")
    rows, cols = payload["axes"]
    assert rows["label"] == "η" and cols["label"] == "m" and rows["control"] == "slider"
    for i, (_, row_fields) in enumerate(g.rows.choices):
        for j, (_, col_fields) in enumerate(g.columns.choices):
            cell = payload["cells"][i * len(cols["choices"]) + j]
            config = payload["runs"][cell["run"]]["config"]
            assert config["learning_rate"] == row_fields["learning_rate"]
            assert config["batch_size"] == col_fields["batch_size"]
            base = payload["runs"][cell["baseline"]]["config"]
            assert (base["learning_rate"], base["batch_size"]) == (0.1, 10)
    assert (rows["choices"][rows["value"]], cols["choices"][cols["value"]]) == ("0.1", "10"), "starts at the reference"
    heatmap = payload["figure"]["data"][4]
    assert heatmap["type"] == "heatmap" and heatmap["y"] == rows["choices"] and heatmap["x"] == cols["choices"]
    loss_axis = payload["figure"]["layout"]["yaxis"]
    assert loss_axis["type"] == "log" and loss_axis["tickformat"] == "~g", "0.5 and 0.2, not a bare 5 and 2"


def test_payload_marks_failed_runs_and_keeps_json_finite():
    def fail(c):
        if c.learning_rate == 1.0:
            return overflow
        if c.learning_rate == 0.3 and c.batch_size == 1:
            return dead
        return None

    g, payload = _payload("sgd", fail)
    text = json.dumps(payload, allow_nan=False)  # no nan or inf anywhere
    assert "NaN" not in text and "Infinity" not in text
    failed_runs = [r for r in payload["runs"].values() if r["failed"]]
    assert len(failed_runs) == len(g.columns.choices) + 1
    assert {r["fate"] for r in failed_runs} == {"overflow", "dead"}
    assert all(r["reason"] for r in failed_runs)
    assert any(v is None for r in failed_runs for v in r["loss"]), "a nan loss is a gap (null)"
    heatmap, crosses = payload["figure"]["data"][4], payload["figure"]["data"][5]
    row = g.rows.texts.index("1")
    assert heatmap["z"][row] == [None] * len(g.columns.choices), "failed cells have no colour"
    assert heatmap["text"][row] == [""] * len(g.columns.choices)
    assert "failed run" in heatmap["customdata"][row][0]
    marked = set(zip(crosses["x"], crosses["y"]))
    assert marked == {(m, "1") for m in g.columns.texts} | {("1", "0.3")}
    good = heatmap["z"][g.rows.texts.index("0.1")]
    assert all(v is not None and v > 0 for v in good), "the colour is -log10 of the test error"


def test_chance_level_runs_are_failed_too():
    g, payload = _payload("momentum", lambda c: (lambda **f: hist(0.098, **f)) if c.momentum == 0.99 else None)
    at_chance = [r for r in payload["runs"].values() if r["config"]["momentum"] == 0.99]
    assert at_chance and all(r["failed"] and r["fate"] == "chance" for r in at_chance)


def test_payload_refuses_missing_runs():
    g = pages.GRIDS["decay"]
    runs = _runs(g)
    runs.pop(g.cells()[3])
    with pytest.raises(ValueError, match=r"lacks 1 of the \d+ runs of grid 'decay'"):
        pages.runs_payload(g, runs)


def test_unknown_grid_names_the_grids():
    with pytest.raises(ValueError, match=r"no explorer grid 'sdg' \(did you mean 'sgd'\?\); the grids are adaptive"):
        pages.grid("sdg")
    with pytest.raises(TypeError, match="needs sweep="):
        pages.explorer("gradients")


def test_element_carries_its_data_safely():
    def hostile(**fields):
        history = overflow(**fields)
        history.reason = "</script><b>$x$</b>"
        return history

    g, payload = _payload("adaptive", lambda c: hostile if c.learning_rate == 1e-4 else None)
    out = pages.element(payload)
    assert "$" not in out, "the book's dollar-maths would take a '$' for TeX"
    data = re.search(r'<script type="application/json" class="ex3-explorer-data">(.*?)</script>', out, re.S).group(1)
    assert json.loads(data) == json.loads(json.dumps(payload)), "the JSON survives the escaping"
    assert out.count("</script>") == 2, "a run's text cannot end the data's script element"
    assert 'id="ex3-explorer-adaptive"' in out and 'data-kind="runs"' in out
    assert out.count('type="range"') == 1 and out.count('<button type="button"') == 5, "η slider, method buttons"
    assert payload["caption"].startswith(g.title) and f"{len(g.cells())} stored runs" in payload["caption"]


def test_h_sweep_histograms_count_every_informative_weight():
    net = MLP((784, 12, 10), seed=0)
    x = np.zeros(784)
    x[300:340] = 0.5
    sweep = gradcheck.h_sweep(net, x, 3, hs=[1e-2, 1e-5, 1e-8])
    for m in gradcheck.METHODS:
        assert sweep.counts[m].shape == (3, sweep.bins.size - 1)
    assert np.array_equal(sweep.counts["central"].sum(axis=1), sweep.informative)
    assert sweep.informative[0] > 0
    payload = pages.gradients_payload(sweep, h=1e-8)
    assert payload["axes"][0]["value"] == 2 and payload["axes"][0]["choices"][2] == "1.0e-08"
    assert payload["counts"]["central"] == sweep.counts["central"].tolist()
    assert payload["median"]["forward"] == sweep.median["forward"].tolist()
    assert "$" not in pages.element(payload)
    lo, hi = sweep.informative.min(), sweep.informative.max()
    said = f"{lo:,} to {hi:,}" if lo != hi else f"{lo:,}"
    assert f"informative weights (a non-zero analytical or numerical gradient) number {said}," in payload["caption"]
    with pytest.raises(ValueError, match="no histograms"):
        pages.gradients_payload(gradcheck.HSweep(sweep.hs, sweep.mean, sweep.median))


def test_plotly_script_ships_with_the_wheel():
    path = pages.plotly_js_path()
    assert path.name == pages.PLOTLY_JS and path.stat().st_size > 1_000_000


def test_grid_cells_are_valid_configs():
    for g in pages.GRIDS.values():
        for c in g.configs():
            assert isinstance(c, RunConfig) and c == RunConfig.from_dict(c.to_dict())


def test_show_says_when_the_explorer_is_off(capsys):
    pages.show("sgd", False)
    assert capsys.readouterr().out == "The explorer skipped: explorer = False\n"


def test_a_grid_at_a_smaller_scale_trains_every_run_on_those_images():
    for g in pages.GRIDS.values():
        assert g.at_scale(None).configs() == g.configs(), "at full scale, the same runs (the same store keys)"
        small = g.at_scale(10_000)
        assert len(small.configs()) == len(g.configs())
        assert all(c.train_size == 10_000 for c in small.configs())
        assert [c.replace(train_size=None) for c in small.configs()] == g.configs()
        assert all(small.baseline_of(c).train_size == 10_000 for c in small.cells())
    # The methods' explorer is still the protocol chapter's tuning grid at that scale.
    full = {c for runs in protocol.tuning_runs().values() for c in runs} & set(pages.GRIDS["adaptive"].cells())
    small = {c for runs in protocol.tuning_runs(train_size=10_000).values() for c in runs}
    small &= set(pages.GRIDS["adaptive"].at_scale(10_000).cells())
    assert len(full) == len(small) == 35, "the five methods at 7 learning rates, at either scale"
