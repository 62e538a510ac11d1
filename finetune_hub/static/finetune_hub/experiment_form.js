// Shows the hyperparameters of the chosen technique and the live resource estimate.
(function () {
  const form = document.getElementById("experiment-form");
  const out = document.getElementById("estimate");
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  // Which field groups each technique uses comes from the server (experiments/forms.py).
  const groups = JSON.parse(document.getElementById("technique-groups").textContent);

  function params() {
    const hp = {};
    form.querySelectorAll(".hp input").forEach((input) => {
      const name = input.name.slice(3);
      if (input.type === "checkbox") { if (input.checked) hp[name] = true; return; }
      const v = input.value.trim();
      if (!v) return;
      // Module lists (LoRA/LoHa's and IA3's): comma-separated; "none" is the empty list.
      if (name.endsWith("_modules")) {
        hp[name] = v === "all-linear" ? v : v.toLowerCase() === "none" ? [] : v.split(",").map((s) => s.trim()).filter(Boolean);
      }
      else hp[name] = isNaN(Number(v)) ? v : Number(v);
    });
    // A hyperparameter with a fixed set of values (the scheduler, what DPO trains): blank is its default.
    form.querySelectorAll(".hp select.literal").forEach((select) => {
      if (select.value) hp[select.name.slice(3)] = select.value;
    });
    // Choice fields (GRPO's reward model): a run id picked from a list.
    form.querySelectorAll(".hp select.choice").forEach((select) => {
      if (select.value) hp[select.name.slice(3)] = Number(select.value);
    });
    return hp;
  }

  function showGroups() {
    const shown = groups[form.technique.value] || ["all"];
    form.querySelectorAll(".hp").forEach((el) => { el.hidden = !shown.includes(el.dataset.group); });
  }

  // Server text (error messages echo what was typed) is only ever set as textContent.
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function row(label, value) {
    const tr = el("tr");
    const cell = el("td");
    cell.append(el("b", value));
    tr.append(el("td", label), cell);
    return tr;
  }

  function showErrors(data) {
    const box = el("div", undefined, "errors");
    box.append(el("div", data.detail || "Invalid input"));
    (data.errors || []).forEach((e) => box.append(el("div", `${e.field}: ${e.message}`)));
    out.replaceChildren(box);
  }

  let timer;
  async function estimate() {
    const body = {base_model: form.base_model.value, technique: form.technique.value, hyperparameters: params()};
    if (form.dataset_version && form.dataset_version.value) body.dataset_version = Number(form.dataset_version.value);
    const r = await fetch(form.dataset.estimateUrl, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf}, body: JSON.stringify(body)});
    const data = await r.json();
    if (!r.ok) {
      showErrors(data);
      return;
    }
    const gpu = data.estimate.cuda, cpu = data.estimate.cpu;
    const table = el("table");
    table.append(
      row("Parameters", gpu.total_params.toLocaleString()),
      row("Trainable", gpu.trainable_params.toLocaleString()),
      row("Weights", gpu.weights_human), row("Gradients", gpu.gradients_human),
      row("Optimizer", gpu.optimizer_human), row("Activations", gpu.activations_human),
      row(gpu.gpus > 1 ? `Total on each of ${gpu.gpus} GPUs` : "Total on a GPU", gpu.total_human),
      row(gpu.gpus > 1 ? `All ${gpu.gpus} GPUs together` : "All GPUs together", `${gpu.all_gpus_gb} GB`),
      row(cpu.gpus > 1 ? `Total on CPU, each of ${cpu.gpus} processes` : "Total on CPU", cpu.total_human),
      row("Learning rate", data.hyperparameters.learning_rate));
    out.replaceChildren(table);
    if (gpu.needs_cuda) out.append(el("p", "needs a CUDA worker", "badge warn"));
    if (data.warnings.length) {
      const box = el("div", "", "warnings");
      box.id = "guard-warnings";
      box.append(el("b", "Overfitting guard"));
      data.warnings.forEach((w) => box.append(el("p", w)));
      out.append(box);
    }
  }

  form.addEventListener("input", () => { showGroups(); clearTimeout(timer); timer = setTimeout(estimate, 300); });
  showGroups();
  estimate();
})();
