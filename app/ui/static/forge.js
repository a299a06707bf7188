// Shared helpers for the review page. Every piece of data (model output above all) reaches the
// page through textContent / text nodes; nothing here parses HTML.
"use strict";

const Forge = (() => {
  const KEY = "forge.auth";

  function auth() {
    try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
  }
  function signIn(kind, value) { sessionStorage.setItem(KEY, JSON.stringify({ kind, value })); }
  function signOut() { sessionStorage.removeItem(KEY); }

  function headers() {
    const a = auth();
    const h = { Accept: "application/json" };
    if (a && a.kind === "key") h.Authorization = "Bearer " + a.value;
    if (a && a.kind === "name") h["X-Actor"] = a.value;
    return h;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch("/api/v1" + path, init);
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error((data && data.error && data.error.message) || "HTTP " + r.status);
      err.status = r.status;
      err.details = data && data.error ? data.error.details : null;
      throw err;
    }
    return data;
  }

  // el("div", {class: "x", text: "..."}, child, "text child") - text is always a text node.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else if (k === "href" || k === "title" || k === "draggable" || k === "hidden" || k === "max" || k === "value") node[k] = v;
      else throw new Error("el(): unsupported property " + k);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  async function showWho() {
    const who = document.getElementById("who");
    const out = document.getElementById("sign-out");
    if (!auth()) return null;
    const me = await api("GET", "/me");
    who.textContent = "signed in as " + me.actor;
    out.hidden = false;
    out.onclick = () => { signOut(); location.href = "/ui/"; };
    return me.actor;
  }

  return { auth, signIn, signOut, api, el, showWho };
})();
