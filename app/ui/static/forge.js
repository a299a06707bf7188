// Shared helpers for every console page. The ONE fetch wrapper (`request`) lives here, so the way
// the page authenticates (a key signs in once and becomes an HttpOnly session cookie with a CSRF token; without keys, an X-Actor name) changes in
// one place. Data (model output above all) reaches the page as text nodes, or as markdown through
// `markdown()`: markdown-it with raw HTML off, then DOMPurify; nothing else here parses HTML.
"use strict";

const Forge = (() => {
  const KEY = "forge.auth";
  const ROLES = ["viewer", "annotator", "admin"];
  let me = null; // GET /api/v1/me: {actor, role?, csrf_token?}; without a role the service has none: full rights
  let csrf = null; // the session's CSRF token, sent as X-CSRF-Token on writes (from sign-in or /me)

  // {kind: "name", value} without keys (X-Actor); {kind: "session"} once a key signed in: the key
  // itself goes to the server once and lives on only as an HttpOnly session cookie.
  function auth() {
    try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
  }
  async function signIn(kind, value) {
    me = null;
    if (kind === "key") {
      const m = await api("POST", "/session", { key: value });
      csrf = m.csrf_token;
      sessionStorage.setItem(KEY, JSON.stringify({ kind: "session" }));
    } else {
      sessionStorage.setItem(KEY, JSON.stringify({ kind, value }));
    }
  }
  function signOut() {
    const a = auth();
    sessionStorage.removeItem(KEY);
    me = null;
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

  async function failure(r) {
    const data = await r.json().catch(() => null);
    const err = new Error((data && data.error && data.error.message) || "HTTP " + r.status);
    err.status = r.status;
    err.details = data && data.error ? data.error.details : null;
    return err;
  }

  // The one door to the API: every call (JSON, uploads, downloads, event streams) goes through here.
  async function request(method, path, { json, body, contentType, signal } = {}) {
    const write = method !== "GET";
    const a = auth();
    if (write && !csrf && a && a.kind === "session") csrf = (await whoami()).csrf_token;
    const init = { method, headers: headers(), signal, credentials: "same-origin" };
    // every write says what it sends (JSON unless told): the server refuses other types
    if (write && json === undefined && body === undefined) init.headers["Content-Type"] = "application/json";
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      if (contentType) init.headers["Content-Type"] = contentType;
      init.body = body;
    }
    const r = await fetch("/api/v1" + path, init);
    if (!r.ok) throw await failure(r);
    return r;
  }

  async function api(method, path, json) {
    const r = await request(method, path, { json });
    return r.status === 204 ? null : r.json();
  }

  // Every list answers {data, next_cursor}: this follows the cursor to the end (up to `most` rows).
  async function apiList(path, most = 10000) {
    const data = [];
    let cursor = null;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const page = await api("GET", cursor ? path + sep + "cursor=" + encodeURIComponent(cursor) : path);
      data.push(...page.data);
      cursor = page.next_cursor;
    } while (cursor && data.length < most);
    return { data };
  }

  // Server-sent events read through fetch (EventSource cannot send the auth header).
  // onEvent(name, data) for each event; resolves when the stream ends; abort with the signal.
  async function stream(path, onEvent, signal) {
    const r = await request("GET", path, { signal });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  // Download an API file (the auth header rules out a plain link) under the server's file name.
  async function download(path, fallbackName) {
    const r = await request("GET", path);
    const cd = r.headers.get("Content-Disposition") || "";
    const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
    const blob = await r.blob();
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: m ? decodeURIComponent(m[1]) : fallbackName });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  // el("div", {class: "x", text: "..."}, child, "text child") - text is always a text node.
  const PROPS = new Set(["href", "title", "draggable", "hidden", "max", "min", "value", "type", "disabled", "checked",
    "download", "id", "name", "htmlFor", "tabIndex", "placeholder", "open", "step", "selected", "rows"]);
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "for" || k === "scope") node.setAttribute(k, v);
      else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (PROPS.has(k)) node[k] = v;
      else throw new Error("el(): unsupported property " + k);
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
    return node;
  }

  // ---- markdown: markdown-it (raw HTML off, no images) -> DOMPurify -> a DocumentFragment -------
  let md = null;
  function renderer() {
    if (md) return md;
    md = window.markdownit({
      html: false, // model output's <script>, <img onerror> ... stay text
      linkify: true,
      highlight(code, lang) {
        if (lang && window.hljs && hljs.getLanguage(lang)) {
          try { return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value; } catch { /* plain */ }
        }
        return ""; // markdown-it escapes it
      },
    });
    md.disable("image"); // no requests to addresses a model wrote
    // table alignment as a class: the CSP allows no style attributes
    for (const name of ["th_open", "td_open"]) {
      md.renderer.rules[name] = (tokens, idx, options, env, self) => {
        const t = tokens[idx];
        const m = /text-align:(left|right|center)/.exec(t.attrGet("style") || "");
        if (t.attrs) t.attrs = t.attrs.filter(([k]) => k !== "style");
        if (m) t.attrJoin("class", "align-" + m[1]);
        return self.renderToken(tokens, idx, options);
      };
    }
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        node.setAttribute("rel", "noopener noreferrer nofollow");
        node.setAttribute("target", "_blank");
      }
    });
    return md;
  }
  const PURIFY = {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS: ["style", "img", "form", "input", "button", "iframe", "svg", "math"],
    FORBID_ATTR: ["style"],
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
  };
  function markdown(text) {
    const html = renderer().render(text || "");
    return DOMPurify.sanitize(html, PURIFY);
  }
  // Into `node`: rendered markdown, or the raw text when `raw`.
  function showText(node, text, raw) {
    node.classList.toggle("raw", !!raw);
    node.classList.toggle("md", !raw);
    if (raw) node.textContent = text || "";
    else node.replaceChildren(markdown(text));
  }

  // Word-level diff (jsdiff) as <del>/<ins> text nodes.
  function wordDiff(before, after) {
    const frag = document.createDocumentFragment();
    for (const part of Diff.diffWordsWithSpace(before || "", after || "")) {
      const tag = part.added ? "ins" : part.removed ? "del" : "span";
      frag.append(el(tag, { text: part.value }));
    }
    return frag;
  }

  // ---- who is signed in, and what they may do ---------------------------------------------------
  async function whoami() {
    if (!me) me = await api("GET", "/me");
    if (me.csrf_token) csrf = me.csrf_token;
    return me;
  }
  function role() { return (me && me.role) || "admin"; }
  function can(needed) { return ROLES.indexOf(role()) >= ROLES.indexOf(needed); }
  // Hide what the role may not do: [data-needs-role=admin|annotator|viewer].
  function applyRole(root) {
    for (const node of (root || document).querySelectorAll("[data-needs-role]")) {
      if (!can(node.dataset.needsRole)) { node.hidden = true; node.setAttribute("data-role-hidden", ""); }
    }
  }

  async function showWho() {
    const who = document.getElementById("who");
    const out = document.getElementById("sign-out");
    if (!auth()) return null;
    const m = await whoami();
    who.textContent = "signed in as " + m.actor + (m.role ? " (" + m.role + ")" : "");
    out.hidden = false;
    out.onclick = async () => { await signOut(); location.href = "/ui/"; };
    // keys and roles come together (issue 10): a /me that names a role means a keys API to manage
    document.getElementById("nav-keys").hidden = !(m.role && can("admin"));
    return m.actor;
  }

  // Pages other than the sign-in one: send the visitor to sign in, and back here after.
  function requireAuth() {
    if (auth()) return true;
    location.href = "/ui/?next=" + encodeURIComponent(location.pathname + location.search);
    return false;
  }

  function say(text, isError) {
    const m = document.getElementById("message");
    if (!m) return;
    m.textContent = text || "";
    m.className = isError ? "message error" : "message";
  }

  // The dataset pages' shared start: sign-in check, who, the dataset's name in the tab bar.
  async function datasetPage() {
    if (!requireAuth()) return null;
    const id = document.querySelector("nav.tabs").dataset.datasetId;
    await showWho();
    const d = await api("GET", "/datasets/" + id);
    document.getElementById("dataset-name").textContent = d.name;
    document.title = d.name + " · " + document.title;
    applyRole();
    return d;
  }

  // A flag code with its detail, whatever the code: the detail is looked up in the row's meta /
  // details under flag_details[code] (the pipeline's convention), flags[code] or [code].
  function flagChip(code, details) {
    const d = details && ((details.flag_details && details.flag_details[code]) ?? (details.flags && details.flags[code]) ?? details[code]);
    const detail = d === undefined || d === null ? "" : typeof d === "object" ? JSON.stringify(d) : String(d);
    return el("span", { class: "chip flag", title: detail || code, "data-flag": code, text: detail ? code + ": " + detail : code });
  }
  function chip(text, cls) { return el("span", { class: cls ? "chip " + cls : "chip", text }); }

  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(0) + "%");
  const num = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const money = (x) => (x === null || x === undefined ? "–" : "$" + Number(x).toFixed(4));
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

  return {
    auth, signIn, signOut, resumeSession, request, api, apiList, stream, download, el, markdown, showText, wordDiff, whoami, role, can,
    applyRole, showWho, requireAuth, say, datasetPage, flagChip, chip, pct, num, money, when,
  };
})();
