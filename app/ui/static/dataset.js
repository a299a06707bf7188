// One dataset: review progress (per dataset and reviewer), import by drag and drop, settings.
"use strict";

(() => {
  const { api, request, el, datasetPage, say, showText, can } = Forge;
  const $ = (id) => document.getElementById(id);
  const id = document.querySelector("nav.tabs").dataset.datasetId;
  let dataset = null;

  function figure(label, value, hint) {
    return el("div", { class: "figure", title: hint || "" }, el("span", { class: "value", text: String(value) }), el("span", { class: "label", text: label }));
  }

  async function showProgress() {
    const p = await api("GET", "/datasets/" + id + "/review/progress");
    const by = (o, k) => (o && o[k]) || 0;
    const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
    const f = p.flagged || {};
    $("summary").replaceChildren(
      figure("prompts", sum(p.prompts_by_status)),
      figure("items with answers", p.items),
      figure("verdicts", p.verdicts_given + " / " + p.verdicts_wanted, "approvals and rejections against items × overlap (" + p.overlap + ")"),
      figure("completions approved", by(p.completions_by_status, "approved") + " / " + sum(p.completions_by_status)),
      figure("rankings approved", by(p.rankings_by_status, "approved") + " / " + sum(p.rankings_by_status),
        Object.entries(p.rankings_by_kind).map(([k, n]) => n + " " + k).join(", ")),
      figure("needs review", (f.prompts || 0) + (f.completions || 0) + (f.rankings || 0),
        (f.prompts || 0) + " prompts, " + (f.completions || 0) + " completions, " + (f.rankings || 0) + " rankings flagged"),
    );
    const body = $("reviewers").querySelector("tbody");
    body.replaceChildren(...p.reviewers.map((r) => el("tr", { "data-reviewer": r.reviewer },
      el("th", { scope: "row", text: r.reviewer }),
      ...["approved", "rejected", "rankings", "edits", "completions_added", "comments"].map((k) => el("td", { text: String(r[k]) })),
    )));
    $("no-reviewers").hidden = p.reviewers.length > 0;
  }

  function showSettings(d) {
    dataset = d;
    const s = d.settings || {};
    $("description").value = d.description || "";
    $("overlap").value = s.review_overlap ?? "";
    $("guidelines").value = s.guidelines || "";
    showText($("guidelines-preview"), $("guidelines").value);
    for (const node of $("settings-form").elements) if (!can("admin")) node.disabled = true;
  }

  $("guidelines").addEventListener("input", () => showText($("guidelines-preview"), $("guidelines").value));

  $("settings-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    // settings is replaced whole: keep what this form does not show (LLM roles, judge template, ...)
    const settings = { ...(dataset.settings || {}) };
    const overlap = $("overlap").value.trim();
    if (overlap) settings.review_overlap = Number(overlap); else delete settings.review_overlap;
    const guidelines = $("guidelines").value;
    if (guidelines.trim()) settings.guidelines = guidelines; else delete settings.guidelines;
    try {
      showSettings(await api("PATCH", "/datasets/" + id, { description: $("description").value, settings }));
      say("Settings saved.");
      $("settings-status").textContent = "Saved.";
      await showProgress();
    } catch (e) {
      say(e.message, true);
      $("settings-status").textContent = e.message;
    }
  });

  // ---- import ----------------------------------------------------------------------------------
  const FORMATS = { jsonl: "jsonl", ndjson: "jsonl", json: "json", csv: "csv", txt: "jsonl" };

  async function importFile(file) {
    const ext = (file.name.split(".").pop() || "").toLowerCase();
    const q = new URLSearchParams({ mode: $("import-mode").value });
    if (FORMATS[ext]) q.set("format", FORMATS[ext]);
    const form = new FormData();
    form.append("file", file, file.name);
    $("import-report").replaceChildren(el("p", { class: "muted", text: "Importing " + file.name + "…" }));
    try {
      const r = await request("POST", "/datasets/" + id + "/prompts/import?" + q, { body: form });
      showReport(file.name, await r.json());
      await showProgress();
    } catch (e) {
      $("import-report").replaceChildren(el("p", { class: "error", role: "alert", text: file.name + ": " + e.message }));
    }
  }

  function showReport(name, r) {
    const lines = [
      el("p", { class: r.committed ? "good" : "error", text: name + ": " + r.inserted + " imported, " + r.duplicates + " duplicates, "
        + r.invalid + " invalid of " + r.total + " rows" + (r.committed ? "" : " — nothing was imported (atomic)") }),
    ];
    if (r.errors.length || r.duplicate_lines.length) {
      const rows = [
        ...r.errors.map((e) => el("tr", { class: "invalid" }, el("td", { text: String(e.line) }), el("td", { text: "invalid" }), el("td", { text: e.message }))),
        ...r.duplicate_lines.map((n) => el("tr", { class: "duplicate" }, el("td", { text: String(n) }), el("td", { text: "duplicate" }), el("td", { text: "already in the dataset or earlier in the file" }))),
      ].sort((a, b) => Number(a.firstChild.textContent) - Number(b.firstChild.textContent));
      lines.push(el("table", { class: "report" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "line" }), el("th", { scope: "col", text: "result" }), el("th", { scope: "col", text: "reason" }))),
        el("tbody", {}, ...rows)));
    }
    $("import-report").replaceChildren(...lines);
  }

  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("file").click(); } });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const file = ev.dataTransfer.files[0];
    if (file) importFile(file);
  });
  $("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) importFile(f); $("file").value = ""; });

  (async () => {
    try {
      const d = await datasetPage();
      if (!d) return;
      showSettings(d);
      await showProgress();
    } catch (e) { say(e.message, true); }
  })();
})();
