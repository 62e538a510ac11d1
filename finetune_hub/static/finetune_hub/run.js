// Live curves and log of a run: polls the API while the run is queued or running.
// The API URLs and whether the run was active come from #run-live's data-* attributes.
(function () {
  const data = document.getElementById("run-live").dataset;
  const active = data.active === "true";
  const metricsUrl = new URL(data.metricsUrl, window.location.href);
  metricsUrl.search = new URLSearchParams({keys: "loss,eval_loss,learning_rate,grad_norm", max_points: "1000"}).toString();
  const logsUrl = new URL(data.logsUrl, window.location.href);
  logsUrl.search = new URLSearchParams({tail: "200"}).toString();
  const layout = (title, ytitle) => ({title: {text: title}, margin: {t: 40, r: 10, b: 40, l: 60},
    xaxis: {title: {text: "step"}}, yaxis: {title: {text: ytitle}}, legend: {orientation: "h"}});
  const line = (series, name) => series ? {x: series.steps, y: series.values, name, mode: "lines+markers",
    marker: {size: 4}} : null;

  async function refresh() {
    const [metrics, run, logs] = await Promise.all([
      fetch(metricsUrl).then((r) => r.json()),
      fetch(data.runUrl).then((r) => r.json()),
      fetch(logsUrl).then((r) => r.json()),
    ]);
    const m = metrics.metrics;
    Plotly.react("chart-loss", [line(m.loss, "train loss"), line(m.eval_loss, "eval loss")].filter(Boolean),
                 layout("Loss", "loss"), {displaylogo: false, responsive: true});
    Plotly.react("chart-lr", [line(m.learning_rate, "learning rate")].filter(Boolean),
                 layout("Learning rate", "lr"), {displaylogo: false, responsive: true});
    document.getElementById("step").textContent = `${run.step} / ${run.total_steps}`;
    document.getElementById("progress").textContent = `${Math.round(run.progress * 100)}%`;
    document.getElementById("eta").textContent = run.eta_seconds ? `${Math.round(run.eta_seconds)} s` : "–";
    const status = document.getElementById("status");
    status.textContent = run.status;
    status.className = `badge ${run.status}`;
    const log = document.getElementById("log");
    log.textContent = logs.lines.join("\n");
    log.scrollTop = log.scrollHeight;
    if (run.error) { const e = document.getElementById("error"); e.hidden = false; e.querySelector("pre").textContent = run.error; }
    if (["queued", "running"].includes(run.status)) setTimeout(refresh, 3000);
    else if (active) window.location.reload();  // show resume, output and checkpoints
  }
  refresh();
})();
