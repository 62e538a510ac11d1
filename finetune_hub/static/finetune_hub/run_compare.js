// Loss curves of the compared runs; the API URL and the ids come from the chart's data-* attributes.
(async function () {
  const chart = document.getElementById("chart-compare");
  const ids = chart.dataset.ids;
  if (!ids) return;
  const url = new URL(chart.dataset.compareUrl, window.location.href);
  url.search = new URLSearchParams({ids, keys: "loss,eval_loss", max_points: "1000"}).toString();
  const data = await fetch(url).then((r) => r.json());
  const traces = [];
  data.forEach((c) => ["loss", "eval_loss"].forEach((k) => { const s = c.metrics[k]; if (s) traces.push(
    {x: s.steps, y: s.values, name: `#${c.run.id} ${k}`, mode: "lines"}); }));
  Plotly.react(chart, traces, {title: {text: "Loss by step"}, xaxis: {title: {text: "step"}}}, {displaylogo: false});
})();
