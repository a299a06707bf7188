// Sign in, the datasets with their progress, and a form to create one.
"use strict";

(() => {
  const { api, apiList, el, auth, signIn, signOut, resumeSession, showWho, applyRole } = Forge;
  const mode = document.body.dataset.authMode;
  const $ = (id) => document.getElementById(id);

  function next() {
    const n = new URLSearchParams(location.search).get("next");
    return n && n.startsWith("/ui/") && !n.startsWith("//") ? n : null;
  }

  // "needs review" counts flagged prompts, completions and rankings, not prompts alone
  function needsReview(c) {
    const f = c.flagged || {};
    const parts = [["prompts", f.prompts], ["rankings", f.rankings], ["completions", f.completions]].filter(([, n]) => n);
    const total = parts.reduce((s, [, n]) => s + n, 0);
    return el("td", { class: "needs-review", title: parts.map(([k, n]) => n + " " + k).join(", ") || "nothing flagged" },
      String(total), parts.length ? el("span", { class: "muted small", text: " (" + parts.map(([k, n]) => n + " " + k).join(", ") + ")" }) : null);
  }

  async function showDatasets() {
    const list = await apiList("/datasets");
    const rows = $("dataset-rows");
    rows.replaceChildren();
    for (const d of list.data) {
      const c = d.counts || {};
      const by = c.prompts_by_status || {};
      const total = c.prompts || 0;
      const reviewed = (by.approved || 0) + (by.rejected || 0);
      rows.append(
        el("tr", { "data-dataset-id": String(d.id) },
          el("th", { scope: "row" }, el("a", { href: "/ui/datasets/" + d.id, text: d.name })),
          el("td", { text: String(total) }),
          el("td", { text: String(c.completions || 0) }),
          el("td", { text: String(c.rankings || 0) }),
          el("td", { text: String(reviewed) }),
          el("td", {}, el("progress", { max: Math.max(total, 1), value: reviewed, "aria-label": "reviewed " + d.name })),
          needsReview(c),
          el("td", {}, el("a", { href: "/ui/datasets/" + d.id + "/review", text: "review", "aria-label": "review " + d.name })),
        ),
      );
    }
    $("no-datasets").hidden = list.data.length > 0;
    $("sign-in").hidden = true;
    $("datasets").hidden = false;
    $("create").hidden = false;
    applyRole();
  }

  async function enter() {
    await showWho();
    const n = next();
    if (n) { location.href = n; return; }
    await showDatasets();
  }

  async function start() {
    if (!auth() && mode === "key") {
      // a new tab: the HttpOnly session cookie may still be signed in
      resumeSession();
      try { await enter(); return; } catch { await signOut(); }
    }
    if (auth()) {
      try { await enter(); return; } catch (e) { await signOut(); $("sign-in-error").textContent = e.message; }
    }
    $("sign-in").hidden = false;
    $("credential").focus();
  }

  $("sign-in-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = $("credential").value.trim();
    if (!value) return;
    $("sign-in-error").textContent = "";
    try {
      await signIn(mode, value);
      await enter();
    } catch (e) {
      await signOut();
      $("sign-in-error").textContent = e.status === 401 ? "That key is not valid." : e.message;
    }
  });

  $("create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("create-error").textContent = "";
    try {
      const d = await api("POST", "/datasets", { name: $("new-name").value.trim(), description: $("new-description").value });
      location.href = "/ui/datasets/" + d.id;
    } catch (e) {
      $("create-error").textContent = e.message;
    }
  });

  start();
})();
