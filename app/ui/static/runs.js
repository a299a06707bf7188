// Runs of a dataset: start generate / judge / synth (with an estimate from earlier runs), the
// list, and one run live over the SSE route: progress, tokens, cost, failed items, cancel, resume.
"use strict";

(() => {
  const { api, el, stream, datasetPage, say, money, when, num } = Forge;
  const $ = (id) => document.getElementById(id);
  const datasetId = document.querySelector("nav.tabs").dataset.datasetId;
  let dataset = null;
  let runs = [];
  let watching = null; // AbortController of the open event stream
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "budget_exhausted"]);

  const kind = () => document.querySelector("input[name=kind]:checked").value;
  const optNumber = (id) => ($(id).value.trim() === "" ? undefined : Number($(id).value));

  function body() {
    const b = { kind: kind() };
    const limit = optNumber("run-limit");
    if (limit) b.prompts = { limit };
    const budget = $("run-budget").value.trim();
    if (budget) b.budget = budget;
    if (b.kind === "generate") b.k = optNumber("gen-k") ?? 4;
    if (b.kind === "judge") {
      b.mode = $("judge-mode").value;
      b.allow_ties = $("judge-ties").checked;
      if ($("judge-source").value) b.source_run_id = Number($("judge-source").value);
    }
    if (b.kind === "synth") {
      b.mode = $("synth-mode").value;
      b.num_prompts = optNumber("synth-n") ?? 20;
      b.topics = $("synth-topics").value.split("\n").map((t) => t.trim()).filter(Boolean);
      delete b.prompts;
    }
    return b;
  }

  // The API has no dry run: estimate from the latest finished run of the same kind (cost per item).
  function estimate() {
    const b = body();
    const prompts = (dataset && dataset.counts && dataset.counts.prompts) || 0;
    const items = b.kind === "synth" ? Math.ceil(b.num_prompts / 5) : Math.min(prompts, (b.prompts && b.prompts.limit) || Infinity);
    const like = runs.find((r) => r.kind === b.kind && r.done > 0);
    if (!like) { $("estimate").textContent = "Estimate: no earlier " + b.kind + " run to go by; about " + items + " items."; return; }
    let perItem = Number(like.cost) / like.done;
    if (b.kind === "generate" && like.params && like.params.k) perItem *= (b.k || 4) / like.params.k;
    const tokens = (like.prompt_tokens + like.completion_tokens) / like.done;
    $("estimate").textContent = "Estimate: about " + items + " items × " + money(perItem) + " ≈ " + money(perItem * items)
      + " (" + Math.round(tokens * items).toLocaleString() + " tokens), from run " + like.id + ".";
  }

  function showKindFields() {
    for (const node of document.querySelectorAll("[data-kind]")) node.hidden = node.dataset.kind !== kind();
    estimate();
  }

  function statusChip(s) { return el("span", { class: "status status-" + s, text: s }); }

  function showRuns() {
    const tbody = $("runs").querySelector("tbody");
    tbody.replaceChildren(...runs.map((r) => el("tr", { "data-run-id": String(r.id) },
      el("th", { scope: "row" }, el("a", { href: "/ui/datasets/" + datasetId + "/runs/" + r.id, text: "#" + r.id })),
      el("td", { text: r.kind }),
      el("td", {}, statusChip(r.status)),
      el("td", {}, el("progress", { max: Math.max(r.total, 1), value: r.done + r.failed, "aria-label": "run " + r.id + " progress" }),
        el("span", { class: "muted small", text: " " + (r.done + r.failed) + "/" + r.total })),
      el("td", { text: String(r.failed) }),
      el("td", { text: (r.prompt_tokens + r.completion_tokens).toLocaleString() }),
      el("td", { text: money(r.cost) }),
      el("td", { text: r.created_by || "" }),
      el("td", { text: when(r.started_at || r.created_at) }),
    )));
    $("no-runs").hidden = runs.length > 0;
    const source = $("judge-source");
    const keep = source.value;
    source.replaceChildren(el("option", { value: "", text: "all of each prompt's answers" }),
      ...runs.filter((r) => r.kind === "generate").map((r) => el("option", { value: String(r.id), text: "run #" + r.id + " (" + r.status + ")" })));
    source.value = keep;
  }

  async function loadRuns() {
    runs = (await api("GET", "/datasets/" + datasetId + "/runs")).data;
    showRuns();
    estimate();
  }

  function showRun(r) {
    $("run-detail").hidden = false;
    $("run-detail").dataset.runId = String(r.id);
    $("run-detail").dataset.status = r.status;
    $("detail-id").textContent = "#" + r.id + " · " + r.kind;
    const p = r.progress || {};
    const fig = (label, value) => el("div", { class: "figure" }, el("span", { class: "value", text: value }), el("span", { class: "label", text: label }));
    $("detail-figures").replaceChildren(
      fig("status", r.status), fig("done", r.done + " / " + r.total), fig("failed", String(r.failed)),
      fig("tokens", (r.prompt_tokens + r.completion_tokens).toLocaleString()), fig("cost", money(r.cost)),
      fig("budget", r.budget === null ? "none" : money(r.budget)),
      fig("rate", p.rate_per_s ? num(p.rate_per_s, 1) + "/s" : "–"), fig("eta", p.eta_s ? Math.round(p.eta_s) + " s" : "–"),
    );
    $("detail-progress").max = Math.max(r.total, 1);
    $("detail-progress").value = r.done + r.failed;
    $("detail-status").textContent = r.error ? r.status + ": " + r.error : r.status;
    $("cancel-run").disabled = TERMINAL.has(r.status);
    $("resume-run").disabled = !TERMINAL.has(r.status) || (r.status === "succeeded" && r.failed === 0); // a resume retries failed items
    const i = runs.findIndex((x) => x.id === r.id);
    if (i >= 0) { runs[i] = r; showRuns(); }
  }

  async function showFailed(runId) {
    const items = (await api("GET", "/runs/" + runId + "/items?status=failed&limit=200")).data;
    $("failed-items").querySelector("tbody").replaceChildren(...items.map((it) => el("tr", {},
      el("td", { text: String(it.item_index) }),
      el("td", {}, it.prompt_id ? el("a", { href: "/ui/datasets/" + datasetId + "/items/" + it.prompt_id, text: "#" + it.prompt_id }) : ""),
      el("td", { text: String(it.attempts) }),
      el("td", { class: "reason", text: it.error || "" }),
    )));
    $("no-failed").hidden = items.length > 0;
  }

  async function watch(runId) {
    if (watching) watching.abort();
    watching = new AbortController();
    const mine = watching;
    showRun(await api("GET", "/runs/" + runId));
    await showFailed(runId);
    try {
      await stream("/runs/" + runId + "/events?interval=0.5", (name, data) => {
        if (name === "progress") showRun(data);
      }, mine.signal);
    } catch (e) {
      if (e.name !== "AbortError") say(e.message, true);
      return;
    }
    if (mine === watching) {
      showRun(await api("GET", "/runs/" + runId));
      await showFailed(runId);
    }
  }

  function open(runId) {
    history.replaceState(null, "", "/ui/datasets/" + datasetId + "/runs/" + runId);
    watch(runId);
  }

  $("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("POST", "/datasets/" + datasetId + "/runs", body());
      say("Started run #" + r.id + ".");
      await loadRuns();
      open(r.id);
    } catch (e) { say(e.message, true); }
  });
  for (const input of document.querySelectorAll("input[name=kind]")) input.addEventListener("change", showKindFields);
  for (const id of ["gen-k", "run-limit", "synth-n"]) $(id).addEventListener("input", estimate);

  $("cancel-run").addEventListener("click", async () => {
    try { showRun(await api("POST", "/runs/" + $("run-detail").dataset.runId + "/cancel")); say("Cancelling."); } catch (e) { say(e.message, true); }
  });
  $("resume-run").addEventListener("click", async () => {
    const runId = $("run-detail").dataset.runId;
    const budget = $("resume-budget").value.trim();
    try {
      await api("POST", "/runs/" + runId + "/resume", budget ? { budget } : {});
      say("Resumed run #" + runId + ".");
      open(runId);
    } catch (e) { say(e.message, true); }
  });
  $("runs").addEventListener("click", (ev) => {
    const a = ev.target.closest("a[href*='/runs/']");
    if (!a) return;
    ev.preventDefault();
    open(Number(a.closest("tr").dataset.runId));
  });

  (async () => {
    try {
      dataset = await datasetPage();
      if (!dataset) return;
      await loadRuns();
      showKindFields();
      const runId = document.getElementById("runs-page").dataset.runId;
      if (runId) watch(Number(runId));
    } catch (e) { say(e.message, true); }
  })();
})();
