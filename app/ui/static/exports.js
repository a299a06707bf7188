// Exports: freeze a version, watch it render, its history, manifest and downloads.
"use strict";

(() => {
  const { api, apiList, el, download, datasetPage, say, when } = Forge;
  const $ = (id) => document.getElementById(id);
  const datasetId = document.querySelector("nav.tabs").dataset.datasetId;
  const base = "/datasets/" + datasetId + "/exports";
  let shown = null; // the version on the right
  let poll = null;

  const rowsOf = (x) => Object.values((x.manifest && x.manifest.files) || {}).reduce((s, f) => s + (f.rows || 0), 0);

  function showHistory(list) {
    $("exports").querySelector("tbody").replaceChildren(...list.map((x) => el("tr", { "data-version": String(x.version) },
      el("th", { scope: "row" }, el("a", { href: "#v" + x.version, text: "v" + x.version })),
      el("td", {}, el("span", { class: "status status-" + x.status, text: x.status })),
      el("td", { text: ((x.options && x.options.formats) || []).join(", ") }),
      el("td", { text: x.manifest ? String(rowsOf(x)) : x.progress.done + " / " + x.progress.total }),
      el("td", { text: x.created_by || "" }),
      el("td", { text: when(x.created_at) }),
    )));
    $("no-exports").hidden = list.length > 0;
  }

  function showVersion(x) {
    shown = x.version;
    $("version-detail").hidden = false;
    $("version-detail").dataset.version = String(x.version);
    $("version-detail").dataset.status = x.status;
    $("version-number").textContent = "v" + x.version;
    $("version-status").textContent = x.status + (x.error ? ": " + x.error : "")
      + (x.status === "succeeded" ? " · " + rowsOf(x) + " rows · finished " + when(x.finished_at) : " · " + x.progress.done + " / " + x.progress.total);
    const ready = x.status === "succeeded";
    $("download-archive").disabled = !ready || !x.archive_url;
    $("download-manifest").disabled = !ready;
    const files = Object.entries((x.manifest && x.manifest.files) || {});
    $("files").querySelector("tbody").replaceChildren(...files.map(([name, f]) => el("tr", { "data-file": name },
      el("th", { scope: "row", text: name }), el("td", { text: String(f.rows) }), el("td", { text: String(f.bytes ?? "") }),
      el("td", { class: "hash", text: (f.sha256 || "").slice(0, 16) + "…", title: f.sha256 || "" }),
      el("td", {}, el("button", { type: "button", class: "small", text: "Download", "aria-label": "download " + name,
        onclick: () => get(base + "/" + x.version + "/files/" + encodeURIComponent(name), name) })),
    )));
    $("manifest").textContent = x.manifest ? JSON.stringify(x.manifest, null, 2) : "";
  }

  async function get(path, name) {
    try { await download(path, name); } catch (e) { say(e.message, true); }
  }

  async function refresh() {
    const list = (await apiList(base)).data.sort((a, b) => b.version - a.version);
    showHistory(list);
    const current = list.find((x) => x.version === shown);
    if (current) showVersion(current);
    clearTimeout(poll);
    if (list.some((x) => !["succeeded", "failed"].includes(x.status))) poll = setTimeout(() => refresh().catch((e) => say(e.message, true)), 700);
  }

  $("export-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const formats = [...document.querySelectorAll("input[name=format]:checked")].map((i) => i.value);
    const body = {
      formats,
      filters: { status: $("with-pending").checked ? ["approved", "pending"] : ["approved"], exclude_flagged: $("exclude-flagged").checked },
      split: { train: Number($("split-train").value), validation: Number($("split-validation").value), test: Number($("split-test").value),
        seed: Number($("split-seed").value) },
    };
    try {
      const x = await api("POST", base, body);
      say("Creating v" + x.version + "…");
      shown = x.version;
      await refresh();
    } catch (e) { say(e.message, true); }
  });
  $("exports").addEventListener("click", (ev) => {
    const a = ev.target.closest("a");
    if (!a) return;
    ev.preventDefault();
    shown = Number(a.closest("tr").dataset.version);
    refresh().catch((e) => say(e.message, true));
  });
  $("download-archive").addEventListener("click", () => get(base + "/" + shown + "/archive", "export-v" + shown + ".tar.gz"));
  $("download-manifest").addEventListener("click", () => get(base + "/" + shown + "/files/manifest.json", "manifest.json"));

  (async () => {
    try {
      if (!(await datasetPage())) return;
      await refresh();
    } catch (e) { say(e.message, true); }
  })();
})();
