// Shared helpers for the review page. Every piece of data (model output above all) reaches the
// page through textContent / text nodes; nothing here parses HTML.
"use strict";

const Forge = (() => {
  const KEY = "forge.auth";
  let csrf = null; // the session's CSRF token, sent as X-CSRF-Token on writes (from sign-in or /me)

  // {kind: "name", value} without keys (X-Actor); {kind: "session"} once a key signed in: the key
  // itself goes to the server once and lives on only as an HttpOnly session cookie.
  function auth() {
    try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
  }
  async function signIn(kind, value) {
    if (kind === "key") {
      const me = await api("POST", "/session", { key: value });
      csrf = me.csrf_token;
      sessionStorage.setItem(KEY, JSON.stringify({ kind: "session" }));
    } else {
      sessionStorage.setItem(KEY, JSON.stringify({ kind, value }));
    }
  }
  function signOut() {
    const a = auth();
    sessionStorage.removeItem(KEY);
    csrf = null;
    if (a && a.kind === "session") return api("DELETE", "/session").catch(() => null);
    return Promise.resolve(null);
  }
  // a page opened in a new tab finds no session storage but may still hold the session cookie
  function resumeSession() { sessionStorage.setItem(KEY, JSON.stringify({ kind: "session" })); }

  function headers() {
    const a = auth();
    const h = { Accept: "application/json" };
    if (a && a.kind === "name") h["X-Actor"] = a.value;
    if (csrf) h["X-CSRF-Token"] = csrf;
    return h;
  }

  async function api(method, path, body) {
    const write = method !== "GET";
    const a = auth();
    if (write && !csrf && a && a.kind === "session") csrf = (await api("GET", "/me")).csrf_token;
    const init = { method, headers: headers(), credentials: "same-origin" };
    // every write says JSON, body or not: the server refuses other types (no cross-site form posts)
    if (write) init.headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
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
    if (me.csrf_token) csrf = me.csrf_token;
    who.textContent = "signed in as " + me.actor;
    out.hidden = false;
    out.onclick = async () => { await signOut(); location.href = "/ui/"; };
    return me.actor;
  }

  return { auth, signIn, signOut, resumeSession, api, el, showWho };
})();
