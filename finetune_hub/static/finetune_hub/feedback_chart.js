// Thumbs up and down per model version, from the json_script block named by data-source.
(function () {
  const chart = document.getElementById("chart-feedback");
  const feedback = JSON.parse(document.getElementById(chart.dataset.source).textContent);
  const versions = feedback.map((f) => "v" + f.version);
  Plotly.react(chart, [
    {x: versions, y: feedback.map((f) => f.up), name: "thumbs up", type: "bar"},
    {x: versions, y: feedback.map((f) => f.down), name: "thumbs down", type: "bar"}],
    {barmode: "group", margin: {t: 20}}, {displaylogo: false});
})();
