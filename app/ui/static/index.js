"use strict";

(() => {
  const { api, el, auth, signIn, signOut, resumeSession, showWho } = Forge;
  const mode = document.body.dataset.authMode;
  const signInBox = document.getElementById("sign-in");
  const datasetsBox = document.getElementById("datasets");
  const errorLine = document.getElementById("sign-in-error");

  async function showDatasets() {
    const list = await api("GET", "/datasets");
    const rows = document.getElementById("dataset-rows");
    rows.replaceChildren();
    for (const d of list.data) {
      const by = (d.counts && d.counts.prompts_by_status) || {};
      const total = (d.counts && d.counts.prompts) || 0;
      const reviewed = (by.approved || 0) + (by.rejected || 0);
      rows.append(
        el("tr", { "data-dataset-id": String(d.id) },
          el("td", {}, el("a", { href: "/ui/datasets/" + d.id, text: d.name })),
          el("td", { text: String(total) }),
          el("td", { text: String(reviewed) }),
          el("td", {}, el("progress", { max: Math.max(total, 1), value: reviewed })),
          el("td", { text: String(by.needs_review || 0) }),
        ),
      );
    }
    document.getElementById("no-datasets").hidden = list.data.length > 0;
    signInBox.hidden = true;
    datasetsBox.hidden = false;
  }

  async function start() {
    if (!auth() && mode === "key") {
      // a new tab: the HttpOnly session cookie may still be signed in
      resumeSession();
      try {
        await showWho();
        await showDatasets();
        return;
      } catch {
        await signOut();
      }
    }
    if (auth()) {
      try {
        await showWho();
        await showDatasets();
        return;
      } catch (e) {
        await signOut();
        errorLine.textContent = e.message;
      }
    }
    signInBox.hidden = false;
    document.getElementById("credential").focus();
  }

  document.getElementById("sign-in-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = document.getElementById("credential").value.trim();
    if (!value) return;
    errorLine.textContent = "";
    try {
      await signIn(mode, value);
      await showWho();
      await showDatasets();
    } catch (e) {
      await signOut();
      errorLine.textContent = e.status === 401 ? "That key is not valid." : e.message;
    }
  });

  start();
})();
