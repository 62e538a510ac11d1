// Live curves and log of a run: polls the API while the run is queued or running.
// The API URLs, the metric keys the run logged and whether the run was active come from
// #run-live's data-* attributes. Every logged metric is charted: loss, learning rate,
// gradient norm, throughput, memory (the training process's and system/ metrics), and the
// rest together.
(function () {
  const data = document.getElementById("run-live").dataset;
  const active = data.active === "true";
  const metricsUrl = new URL(data.metricsUrl, window.location.href);
  metricsUrl.search = new URLSearchParams({keys: data.keys, max_points: "1000"}).toString();
  const logsUrl = new URL(data.logsUrl, window.location.href);
  logsUrl.search = new URLSearchParams({tail: "200"}).toString();
  const layout = (title, ytitle) => ({title: {text: title}, margin: {t: 40, r: 10, b: 40, l: 60},
    xaxis: {title: {text: "step"}}, yaxis: {title: {text: ytitle}}, legend: {orientation: "h"}});
  const line = (series, name) => ({x: series.steps, y: series.values, name,
    mode: series.steps.length === 1 ? "markers" : "lines+markers", marker: {size: 4}});
  const config = {displaylogo: false, responsive: true};
  const memory = (key) => key === "peak_memory_gib" || (key.startsWith("system/") && /memory|rss|ram/.test(key));
  const groups = [
    {id: "chart-loss", title: "Loss", y: "loss", has: (k) => k === "loss" || k === "eval_loss", always: true},
    {id: "chart-lr", title: "Learning rate", y: "lr", has: (k) => k === "learning_rate", always: true},
    {id: "chart-grad", title: "Gradient norm", y: "norm", has: (k) => k === "grad_norm"},
    {id: "chart-speed", title: "Throughput", y: "tokens/s, MFU", has: (k) => k === "tokens_per_second" || k === "mfu"},
    {id: "chart-memory", title: "Memory and system", y: "GiB, %", has: (k) => memory(k) || k.startsWith("system/")},
    // Preference learning (a reward model, DPO): how often the chosen answer wins, held out too.
    {id: "chart-preference", title: "Preference accuracy", y: "chosen outscores rejected",
      has: (k) => /(^|_)(pairwise|reward)_accuracy$/.test(k)},
    // RLHF (GRPO): the reward model's score of the sampled completions, and the KL from the base.
    {id: "chart-reward", title: "Reward and KL", y: "reward, KL, margin",
      has: (k) => ["reward", "eval_reward", "reward_std", "kl", "reward_margin", "eval_reward_margin"].includes(k)},
  ];
  const names = {loss: "train loss", eval_loss: "eval loss", learning_rate: "learning rate",
    pairwise_accuracy: "train pairs", eval_pairwise_accuracy: "held-out pairs",
    reward: "reward (train)", eval_reward: "reward (held-out prompts)", kl: "KL from base"};

  function draw(metrics) {
    const placed = new Set();
    for (const group of groups) {
      const keys = Object.keys(metrics).filter((k) => group.has(k));
      keys.forEach((k) => placed.add(k));
      const card = document.getElementById(group.id).parentElement;
      if (!keys.length && !group.always) { card.hidden = true; continue; }
      card.hidden = false;
      Plotly.react(group.id, keys.map((k) => line(metrics[k], names[k] || k)), layout(group.title, group.y), config);
    }
    const rest = Object.keys(metrics).filter((k) => !placed.has(k) && k !== "epoch");
    const other = document.getElementById("chart-other").parentElement;
    other.hidden = !rest.length;
    if (rest.length) Plotly.react("chart-other", rest.map((k) => line(metrics[k], k)), layout("Other metrics", "value"), config);
  }

  async function refresh() {
    const [metrics, run, logs] = await Promise.all([
      fetch(metricsUrl).then((r) => r.json()),
      fetch(data.runUrl).then((r) => r.json()),
      fetch(logsUrl).then((r) => r.json()),
    ]);
    draw(metrics.metrics);
    // The overfitting guard's flag: a line on the loss chart where eval loss began to rise.
    const flag = document.getElementById("overfitting");
    flag.hidden = !metrics.overfitting;
    flag.textContent = metrics.overfitting ? metrics.overfitting.message : "";
    if (metrics.overfitting) {
      Plotly.relayout("chart-loss", {shapes: [{type: "line", xref: "x", yref: "paper",
        x0: metrics.overfitting.step, x1: metrics.overfitting.step, y0: 0, y1: 1,
        line: {color: "#b54708", dash: "dot"}}]});
    }
    const stop = document.getElementById("stop-reason");
    stop.hidden = !run.stop_reason;
    stop.textContent = run.stop_reason || "";
    document.getElementById("step").textContent = `${run.step} / ${run.total_steps}`;
    document.getElementById("progress").textContent = `${Math.round(run.progress * 100)}%`;
    document.getElementById("eta").textContent = run.eta_seconds ? `${Math.round(run.eta_seconds)} s` : "–";
    document.getElementById("attempt").textContent = `${run.attempt} / ${run.max_attempts}`;
    const worker = document.getElementById("worker");
    if (worker && run.worker) worker.textContent = run.worker;
    const status = document.getElementById("status");
    status.textContent = run.status;
    status.className = `badge ${run.status}`;
    const log = document.getElementById("log");
    log.textContent = logs.lines.join("\n");
    log.scrollTop = log.scrollHeight;
    const box = document.getElementById("error");
    box.hidden = !run.error;  // a resume clears the cancelled or failed message
    box.querySelector("pre").textContent = run.error || "";
    if (["queued", "running"].includes(run.status)) setTimeout(refresh, 3000);
    else if (active) window.location.reload();  // show resume, output and checkpoints
  }
  refresh();
})();
