// Loss curves of any number of compared runs: the ids go in the body of the compare API
// (its URL from data-compare-url), a page of runs at a time, until every run has come.
(async function () {
  const chart = document.getElementById("chart-compare");
  const ids = (chart.dataset.ids || "").split(",").filter(Boolean).map(Number);
  if (!ids.length) return;
  const headers = {"Content-Type": "application/json", "X-CSRFToken": chart.dataset.csrf};
  const keys = ["loss", "eval_loss"];
  const traces = [];
  const limit = 100;
  for (let page = 1; (page - 1) * limit < ids.length; page++) {
    const response = await fetch(chart.dataset.compareUrl, {
      method: "POST", headers, credentials: "same-origin",
      body: JSON.stringify({ids, keys, page, limit, max_points: 1000}),
    });
    if (!response.ok) { chart.textContent = "Could not load the curves (" + response.status + ")."; return; }
    (await response.json()).forEach((c) => keys.forEach((k) => {
      const s = c.metrics[k];
      if (s) traces.push({x: s.steps, y: s.values, name: `#${c.run.id} ${k}`, mode: "lines"});
    }));
  }
  Plotly.react(chart, traces, {title: {text: "Loss by step"}, xaxis: {title: {text: "step"}},
    showlegend: traces.length <= 40}, {displaylogo: false});
})();
