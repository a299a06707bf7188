// Keys and grants for admins, where the service has a keys API (GET/POST /keys, POST /keys/{id}/revoke).
"use strict";

(() => {
  const { api, apiList, el, requireAuth, showWho, applyRole, say, when, can } = Forge;
  const $ = (id) => document.getElementById(id);

  async function show() {
    let list;
    try {
      list = await apiList("/keys");
    } catch (e) {
      if (e.status === 404 || e.status === 405) { $("no-keys-api").hidden = false; return; }
      throw e;
    }
    $("keys-panel").hidden = !can("admin");
    $("keys").querySelector("tbody").replaceChildren(...(list.data || []).map((k) => el("tr", { "data-key-id": String(k.id) },
      el("th", { scope: "row", text: k.name || String(k.id) }), el("td", { text: k.role || "" }),
      el("td", { text: (k.datasets || []).join(", ") }), el("td", { text: when(k.expires_at) }),
      el("td", { text: k.revoked_at ? "revoked" : "active" }),
      el("td", {}, k.revoked_at ? "" : el("button", { type: "button", class: "small", text: "Revoke", "aria-label": "revoke " + (k.name || k.id),
        onclick: () => revoke(k.id) })),
    )));
  }

  async function revoke(keyId) {
    try { await api("POST", "/keys/" + keyId + "/revoke"); await show(); say("Revoked."); } catch (e) { say(e.message, true); }
  }

  $("key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const datasets = $("key-datasets").value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      const k = await api("POST", "/keys", { name: $("key-name").value.trim(), role: $("key-role").value, datasets });
      $("new-key-value").textContent = k.key || "";
      $("new-key").hidden = !k.key;
      await show();
    } catch (e) { say(e.message, true); }
  });

  (async () => {
    if (!requireAuth()) return;
    try {
      await showWho();
      applyRole();
      await show();
    } catch (e) { say(e.message, true); }
  })();
})();
