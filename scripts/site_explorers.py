"""Drive every explorer of a built page (ex3lib.pages) in the browser and compare what it shows with the runs.

For each control of each explorer, two values other than the current one are
selected (a slider moved, a button clicked); after each, the figure's curves
and the line of text under the controls must show the selected run's numbers,
read back from the page and compared with that run in the results store
(found from the grid ex3lib declares, not from the page's own data), and an
element screenshot is saved. The gradients explorer has no stored runs: its
histograms and text are compared with the sweep's numbers the page carries.

Used by ``scripts/check_site.py``; a page without explorers costs nothing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

READY_TIMEOUT_MS = 30_000

#: Applied while an explorer's screenshot is taken: the theme's sticky header
#: bars and its "Skip to main content" link (shown while it has the focus)
#: stay at the top of the window as Chromium scrolls the element into view,
#: and would be painted over the middle of the picture.
SCREENSHOT_STYLE = ".skip-link, .bd-header, .bd-header-article { visibility: hidden !important; }"


def _same(page_values, history_values) -> bool:
    """The page's values (JSON: null for a non-finite value) are exactly the history's."""
    if len(page_values) != len(history_values):
        return False
    for a, b in zip(page_values, history_values):
        b = float(b)
        if a is None:
            if math.isfinite(b):
                return False
        elif not math.isfinite(b) or float(a) != b:
            return False
    return True


def _plot_state(root):
    return root.evaluate("""r => {
        const p = r.querySelector('.ex3-explorer-plot');
        return {traces: p.data.map(t => ({x: t.x ? Array.from(t.x) : [], y: t.y ? Array.from(t.y) : []})),
                readout: r.querySelector('.ex3-explorer-readout').textContent,
                run: r.dataset.run || null, step: r.dataset.step || null};
    }""")


def _select(root, axis: dict, k: int, index: int) -> None:
    if axis["control"] == "slider":
        root.locator(f'input[type=range][data-axis="{k}"]').fill(str(index))
    else:
        root.locator(f'button[data-axis="{k}"][data-index="{index}"]').click()


def _targets(axis: dict) -> list[int]:
    """Two choices other than the current one: the last and the first (or the only other)."""
    others = [i for i in (len(axis["choices"]) - 1, 0, 1) if i != axis["value"] and i < len(axis["choices"])]
    return list(dict.fromkeys(others))[:2]


def _check_runs(root, data, store, shots, stem) -> list[str]:
    from ex3lib import pages

    problems = []
    grid = pages.grid(data["name"]).at_scale(data["train_size"])  # the chapter's scale, as the page says
    selected = [a["value"] for a in data["axes"]]
    for k, axis in enumerate(data["axes"]):
        for index in _targets(axis):
            _select(root, axis, k, index)
            selected[k] = index
            root.page.wait_for_timeout(150)
            state = _plot_state(root)
            where = f"explorer {data['name']}, " + ", ".join(
                f"{a['label']} = {a['choices'][i]}" for a, i in zip(data["axes"], selected))
            config = grid.cell(*selected)
            history = store.get(config)
            if history is None:
                problems.append(f"{where}: the results store has no run {config}")
                continue
            loss, acc = state["traces"][1]["y"], state["traces"][3]["y"]
            if not _same(loss, history.loss) or not _same(acc, history.test_accuracy):
                problems.append(f"{where}: the curves are not the stored run's (loss {loss[-1:]} vs "
                                f"{history.loss[-1:]}, accuracy {acc[-1:]} vs {history.test_accuracy[-1:]})")
            if not _same(state["traces"][1]["x"], history.epoch):
                problems.append(f"{where}: the epochs drawn are not the stored run's")
            final = f"final test accuracy {history.test_accuracy[-1]:.4f}"
            if final not in state["readout"]:
                problems.append(f"{where}: the text does not say '{final}': {state['readout']!r}")
            base = store.get(grid.baseline_of(config))
            if base is None or not _same(state["traces"][0]["y"], base.loss):
                problems.append(f"{where}: the grey curve is not the stored baseline run")
            marker = state["traces"][6]
            if marker["x"] != [_choice(data, 1, selected)] or marker["y"] != [_choice(data, 0, selected)]:
                problems.append(f"{where}: the map marks {marker['x']}, {marker['y']}, not the selected cell")
            root.screenshot(path=str(shots / f"{stem}-{data['name']}-{k}-{index}.png"), style=SCREENSHOT_STYLE)
    return problems


def _choice(data, k, selected):
    return data["axes"][k]["choices"][selected[k]]


def _exponent(text: str) -> str:
    """Exponents written alike: JavaScript's ``toExponential`` writes ``1.0e+0`` where Python writes ``1.0e+00``."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


def _check_gradients(root, data, shots, stem) -> list[str]:
    problems = []
    axis = data["axes"][0]
    for index in _targets(axis):
        _select(root, axis, 0, index)
        root.page.wait_for_timeout(150)
        state = _plot_state(root)
        where = f"explorer gradients, h = {axis['choices'][index]}"
        for t, m in enumerate(data["methods"]):
            if state["traces"][t]["y"] != data["counts"][m][index]:
                problems.append(f"{where}: the {m} histogram is not the sweep's at this step")
            text = f"{m} {data['median'][m][index]:.1e}"
            if _exponent(text) not in _exponent(state["readout"]):
                problems.append(f"{where}: the text does not say the {m} median {text}: {state['readout']!r}")
        if state["step"] != str(index) or state["traces"][6]["x"][:1] != [data["hs"][index]]:
            problems.append(f"{where}: the curve against h does not mark the selected step")
        root.screenshot(path=str(shots / f"{stem}-gradients-{index}.png"), style=SCREENSHOT_STYLE)
    return problems


def _wait_ready(page, root, n) -> list[str]:
    try:
        page.wait_for_function("r => r.dataset.ready === '1'", arg=root.element_handle(), timeout=READY_TIMEOUT_MS)
    except Exception as err:  # noqa: BLE001 - reported as a problem of the page
        return [f"explorer {n} never became ready ({type(err).__name__}); "
                f"its text says {root.locator('.ex3-explorer-readout').text_content()!r}"]
    return []


def explorers_ready(page) -> list[str]:
    """Every explorer on ``page`` drew its figure (e.g. opened from disk, where nothing is compared)."""
    roots = page.locator(".ex3-explorer")
    return [p for n in range(roots.count()) for p in _wait_ready(page, roots.nth(n), n)]


def check_explorers(page, rel: str, shots: Path, store=None) -> list[str]:
    """Every explorer on ``page`` driven as described above; problems as text (empty if none)."""
    roots = page.locator(".ex3-explorer")
    if roots.count() == 0:
        return []
    if store is None:
        from ex3lib import ResultsStore

        store = ResultsStore()
    problems = []
    stem = rel.replace("/", "__").removesuffix(".html")
    for n in range(roots.count()):
        root = roots.nth(n)
        not_ready = _wait_ready(page, root, n)
        if not_ready:
            problems += not_ready
            continue
        data = json.loads(root.locator("script.ex3-explorer-data").text_content())
        root.scroll_into_view_if_needed()
        if data["kind"] == "runs":
            problems += _check_runs(root, data, store, shots, stem)
        elif data["kind"] == "gradients":
            problems += _check_gradients(root, data, shots, stem)
        else:
            problems.append(f"explorer {n} of unknown kind {data['kind']!r}")
    return problems
