// The explorers of the static pages (ex3lib.pages): the controls select a stored run (or a step h) and
// the figure shows it. Every number comes from the element's JSON; nothing is computed or fetched here.
// No dollar sign anywhere in this file: the book's dollar-maths would read it as TeX.
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  function number(v, digits) {
    return v === null || v === undefined ? "n/a" : Number(v).toFixed(digits);
  }

  function exp(v) {
    return v === null || v === undefined ? "n/a" : Number(v).toExponential(1);
  }

  // Wire the sliders and buttons of root to state.selected, calling show() after each change.
  function controls(root, state, show) {
    root.querySelectorAll("input[type=range]").forEach(function (input) {
      input.addEventListener("input", function () {
        state.selected[Number(input.dataset.axis)] = Number(input.value);
        show();
      });
    });
    root.querySelectorAll("button[data-axis]").forEach(function (button) {
      button.addEventListener("click", function () {
        state.selected[Number(button.dataset.axis)] = Number(button.dataset.index);
        show();
      });
    });
  }

  // Bring every control of root in line with the selection (after a click on the map, say).
  function syncControls(root, data, selected) {
    root.querySelectorAll("input[type=range]").forEach(function (input) {
      var k = Number(input.dataset.axis);
      input.value = String(selected[k]);
      var out = input.parentNode.querySelector("output");
      if (out) out.textContent = data.axes[k].choices[selected[k]];
    });
    root.querySelectorAll("button[data-axis]").forEach(function (button) {
      var k = Number(button.dataset.axis);
      button.setAttribute("aria-pressed", String(Number(button.dataset.index) === selected[k]));
    });
  }

  function describe(data, selected) {
    return data.axes.map(function (axis, k) { return axis.label + " = " + axis.choices[selected[k]]; })
      .join(", ");
  }

  function setupRuns(root, data, plot, readout) {
    var nCols = data.axes[1].choices.length;
    var state = { selected: data.axes.map(function (a) { return a.value; }) };
    function show() {
      var i = state.selected[0], j = state.selected[1];
      var cell = data.cells[i * nCols + j];
      var run = data.runs[cell.run], base = data.runs[cell.baseline];
      Plotly.restyle(plot, {
        x: [base.epoch, run.epoch, base.epoch, run.epoch],
        y: [base.loss, run.loss, base.accuracy, run.accuracy],
        name: [data.baseline_label, describe(data, state.selected), data.baseline_label,
               describe(data, state.selected)]
      }, [0, 1, 2, 3]);
      Plotly.restyle(plot, { x: [[data.axes[1].choices[j]]], y: [[data.axes[0].choices[i]]] }, [6]);
      var text = describe(data, state.selected) + ": ";
      if (run.failed) {
        text += "failed (" + run.fate + (run.reason ? ": " + run.reason : "") + "), final test accuracy " +
          number(run.final_accuracy, 4);
      } else {
        text += "final test accuracy " + number(run.final_accuracy, 4) + ", final training loss " +
          number(run.final_loss, 4);
      }
      text += "; in grey, " + data.baseline_label + ": " + number(base.final_accuracy, 4) + ".";
      readout.textContent = text;
      root.dataset.run = cell.run;
      root.dataset.baseline = cell.baseline;
      syncControls(root, data, state.selected);
    }
    controls(root, state, show);
    plot.on("plotly_click", function (event) {
      var point = event.points && event.points[0];
      if (!point || point.curveNumber !== 4) return;
      var i = data.axes[0].choices.indexOf(String(point.y)), j = data.axes[1].choices.indexOf(String(point.x));
      if (i < 0 || j < 0) return;
      state.selected = [i, j];
      show();
    });
    show();
  }

  function setupGradients(root, data, plot, readout) {
    var state = { selected: [data.axes[0].value] };
    function show() {
      var k = state.selected[0];
      Plotly.restyle(plot, { y: data.methods.map(function (m) { return data.counts[m][k]; }) }, [0, 1, 2]);
      Plotly.restyle(plot, {
        x: [data.methods.map(function () { return data.hs[k]; })],
        y: [data.methods.map(function (m) { return data.median[m][k]; })]
      }, [6]);
      readout.textContent = "h = " + data.axes[0].choices[k] + ": median relative error " +
        data.methods.map(function (m) { return m + " " + exp(data.median[m][k]); }).join(", ") +
        " (mean " + data.methods.map(function (m) { return exp(data.mean[m][k]); }).join(", ") + ") over " +
        data.informative[k].toLocaleString("en") + " informative weights.";
      root.dataset.step = String(k);
      syncControls(root, data, state.selected);
    }
    controls(root, state, show);
    show();
  }

  function setupCurves(root, data, plot, readout) {
    var state = { selected: data.axes.map(function (a) { return a.value; }) };
    function show() {
      var key = data.axes.length ? state.selected.join(",") : data.first;
      var group = data.groups[key];
      if (!group) {
        readout.textContent = describe(data, state.selected) + ": no point of the sweep finished ok here.";
        Plotly.restyle(plot, { y: data.metrics.map(function () { return []; }) },
                       data.metrics.map(function (m, k) { return k; }));
        return;
      }
      Plotly.restyle(plot, {
        y: data.metrics.map(function (m) { return group[m].y; }),
        "error_y.array": data.metrics.map(function (m) { return group[m].err || []; })
      }, data.metrics.map(function (m, k) { return k; }));
      readout.textContent = (data.axes.length ? describe(data, state.selected) + ": " : "") +
        data.metrics.map(function (m) {
          var ys = group[m].y.filter(function (v) { return v !== null; });
          return m + " from " + (ys.length ? Math.min.apply(null, ys).toPrecision(4) : "n/a") + " to " +
            (ys.length ? Math.max.apply(null, ys).toPrecision(4) : "n/a");
        }).join("; ") + ".";
      root.dataset.group = key;
      syncControls(root, data, state.selected);
    }
    controls(root, state, show);
    show();
  }

  ready(function () {
    document.querySelectorAll(".ex3-explorer:not([data-ready])").forEach(function (root) {
      var readout = root.querySelector(".ex3-explorer-readout");
      if (!window.Plotly) return;  // the readout already says where the explorer runs
      var data = JSON.parse(root.querySelector("script.ex3-explorer-data").textContent);
      var plot = root.querySelector(".ex3-explorer-plot");
      Plotly.newPlot(plot, data.figure.data, data.figure.layout, { responsive: true, displaylogo: false })
        .then(function () {
          var setup = { runs: setupRuns, gradients: setupGradients, curves: setupCurves }[data.kind];
          setup(root, data, plot, readout);
          root.dataset.ready = "1";
        });
    });
  });
})();
