// Curves of any number of compared runs: the ids go in the body of the compare API (its URL
// from data-compare-url), a page of runs at a time, until every run has come. Any logged
// metric, smoothed (an exponential moving average, as TensorBoard and W&B draw it) and on a
// linear or log scale; a series of one point is drawn as a marker. The parameter table
// shows the parameters the runs differ in, and the shared ones on request.
(function () {
  const chart = document.getElementById("chart-compare");
  const ids = (chart.dataset.ids || "").split(",").filter(Boolean).map(Number);
  const metric = document.getElementById("metric");
  const smoothing = document.getElementById("smoothing");
  const logScale = document.getElementById("log-scale");
  const showSame = document.getElementById("show-same");
  const headers = {"Content-Type": "application/json", "X-CSRFToken": chart.dataset.csrf};
  const limit = 100;
  let curves = [];  // {name, steps, values}, as the API sent them

  if (showSame) showSame.addEventListener("change", () => {
    document.getElementById("params").classList.toggle("hide-same", !showSame.checked);
  });
  if (!ids.length) return;

  function smooth(values, weight) {
    if (!weight) return values;
    let last = null;
    return values.map((v) => (last = last === null ? v : last * weight + v * (1 - weight)));
  }

  function draw() {
    const weight = Number(smoothing.value);
    document.getElementById("smoothing-value").textContent = weight.toFixed(2);
    const traces = curves.map((c) => ({
      x: c.steps, y: smooth(c.values, weight), name: c.name,
      mode: c.steps.length === 1 ? "markers" : "lines",
    }));
    Plotly.react(chart, traces, {
      title: {text: `${metric.options[metric.selectedIndex].text} by step`},
      xaxis: {title: {text: "step"}},
      yaxis: {type: logScale.checked ? "log" : "linear"},
      showlegend: traces.length <= 40,
    }, {displaylogo: false, responsive: true});
  }

  async function load() {
    const keys = metric.value.split(",");
    const loaded = [];
    for (let page = 1; (page - 1) * limit < ids.length; page++) {
      const response = await fetch(chart.dataset.compareUrl, {
        method: "POST", headers, credentials: "same-origin",
        body: JSON.stringify({ids, keys, page, limit, max_points: 1000}),
      });
      if (!response.ok) { chart.textContent = "Could not load the curves (" + response.status + ")."; return; }
      (await response.json()).forEach((c) => keys.forEach((k) => {
        const s = c.metrics[k];
        if (s) loaded.push({name: `#${c.run.id} ${k}`, steps: s.steps, values: s.values});
      }));
    }
    curves = loaded;
    draw();
  }

  metric.addEventListener("change", load);
  smoothing.addEventListener("input", draw);
  logScale.addEventListener("change", draw);
  load();
})();
