// The review screen: lease an item, show it, rank with keys 1..K or by dragging, approve (a),
// reject (r), edit (e), skip (s), go back (k), undo (u). Model text is only ever textContent.
"use strict";

(() => {
  const { api, el, auth, showWho } = Forge;
  if (!auth()) { location.href = "/ui/"; return; }

  const root = document.getElementById("review");
  const datasetId = root.dataset.datasetId;
  const $ = (id) => document.getElementById(id);

  let item = null;        // the ReviewItem on screen
  let order = [];         // completion ids, best first
  let dirty = false;      // the order differs from the ranking on record
  let pending = [];       // card numbers typed so far
  let focused = null;     // completion id picked for editing (click a card)
  let busy = false;
  const seen = [];        // prompt ids reviewed or skipped, for going back
  const skipped = [];

  function say(text, isError) {
    const m = $("message");
    m.textContent = text || "";
    m.className = isError ? "message error" : "message";
  }

  function completions() { return item ? item.completions : []; }
  function number(cid) { return completions().findIndex((c) => c.id === cid) + 1; }

  function baseline(it) {
    const ranking = it.my_ranking || it.judge_ranking;
    const rank = new Map();
    if (ranking) ranking.completion_ids.forEach((cid, i) => rank.set(cid, ranking.ranks[i]));
    const ids = it.completions.map((c) => c.id);
    ids.sort((a, b) => (rank.get(a) ?? Infinity) - (rank.get(b) ?? Infinity) || a - b);
    const covered = ranking && ids.every((cid) => rank.has(cid));
    return { ids, dirty: ids.length >= 2 && !covered };
  }

  function show(it, keepOrder) {
    item = it;
    pending = [];
    if (!it) {
      $("item").hidden = true;
      $("empty").hidden = false;
      return;
    }
    const ids = it.completions.map((c) => c.id);
    const same = keepOrder && order.length === ids.length && order.every((cid) => ids.includes(cid));
    if (!same) {
      const b = baseline(it);
      order = b.ids;
      dirty = b.dirty;
      focused = null;
    }
    $("empty").hidden = true;
    $("item").hidden = false;
    render();
  }

  function chip(text, cls) { return el("span", { class: cls ? "chip " + cls : "chip", text }); }

  function render() {
    const it = item;
    const p = it.prompt;
    $("item").dataset.promptId = String(p.id);
    $("prompt-id").textContent = "#" + p.id;
    $("prompt-text").textContent = p.text;
    $("prompt-meta").replaceChildren(
      chip(p.review_status), ...p.tags.map((t) => chip("tag: " + t)), ...p.flag_reasons.map((f) => chip(f, "flag")),
      ...(p.reviewed_by.length ? [chip("reviewed by " + p.reviewed_by.join(", "))] : []),
    );
    const j = it.judge_ranking;
    const judgeRank = new Map();
    if (j) {
      j.completion_ids.forEach((cid, i) => judgeRank.set(cid, j.ranks[i]));
      const parts = [j.judge_model || "judge", j.template_version ? "template " + j.template_version : null,
        j.consistency !== null ? "consistency " + j.consistency.toFixed(2) : null, j.review_status];
      $("judge-line").textContent = parts.filter(Boolean).join(" · ");
      $("judge-flags").replaceChildren(...j.flag_reasons.map((f) => chip(f, "flag")));
      $("judge-rationale").textContent = j.rationale || "";
    } else {
      $("judge-line").textContent = "no judge ranking";
      $("judge-flags").replaceChildren();
      $("judge-rationale").textContent = "";
    }
    renderOrder();
    const cards = completions().map((c, i) => {
      const pos = order.indexOf(c.id) + 1;
      const shown = c.edited_text ?? c.text;
      const card = el("article", { class: pos === 1 ? "card top" : "card", "data-completion-id": String(c.id) },
        el("header", {},
          el("span", { class: "num", text: "#" + (i + 1) }),
          chip(c.source === "human" ? "human: " + (c.author || "") : c.source === "imported" ? "imported" : (c.model || "model")),
          ...(judgeRank.has(c.id) ? [chip("judge: " + judgeRank.get(c.id))] : []),
          ...c.flag_reasons.map((f) => chip(f, "flag")),
          el("span", { class: "rank", text: "rank " + pos }),
        ),
        el("div", { class: "text completion-text", text: shown }),
        c.edited_text !== null
          ? el("details", {}, el("summary", { text: "original" }), el("div", { class: "text original-text", text: c.text }))
          : null,
      );
      if (focused === c.id) card.classList.add("focused");
      card.addEventListener("click", () => { focused = c.id; say("editing target: #" + (i + 1)); });
      return card;
    });
    $("completions").replaceChildren(...cards);
  }

  function renderOrder() {
    const list = $("order");
    list.replaceChildren(...order.map((cid) => {
      const li = el("li", { draggable: true, "data-completion-id": String(cid), text: "#" + number(cid) });
      li.addEventListener("dragstart", (ev) => { ev.dataTransfer.setData("text/plain", String(cid)); li.classList.add("dragging"); });
      li.addEventListener("dragend", () => li.classList.remove("dragging"));
      li.addEventListener("dragover", (ev) => ev.preventDefault());
      li.addEventListener("drop", (ev) => {
        ev.preventDefault();
        const moved = Number(ev.dataTransfer.getData("text/plain"));
        if (!order.includes(moved) || moved === cid) return;
        const rest = order.filter((x) => x !== moved);
        rest.splice(rest.indexOf(cid) + (order.indexOf(moved) < order.indexOf(cid) ? 1 : 0), 0, moved);
        order = rest;
        dirty = true;
        render();
      });
      return li;
    }));
    $("pending").textContent = pending.length ? "ranking: " + pending.map((n) => "#" + n).join(" > ") + " > …" : "";
  }

  function rankKey(n) {
    const k = completions().length;
    if (n > k || k < 2 || pending.includes(n)) return;
    pending.push(n);
    if (pending.length >= k - 1) {
      const picked = pending.map((m) => completions()[m - 1].id);
      order = picked.concat(completions().map((c) => c.id).filter((cid) => !picked.includes(cid)));
      dirty = true;
      pending = [];
      render();
    } else {
      renderOrder();
    }
  }

  function resetOrder() {
    if (!item) return;
    const b = baseline(item);
    order = b.ids;
    dirty = b.dirty;
    pending = [];
    render();
  }

  async function refreshProgress() {
    try {
      const d = await api("GET", "/datasets/" + datasetId);
      const by = d.counts.prompts_by_status || {};
      const done = (by.approved || 0) + (by.rejected || 0);
      $("dataset-name").textContent = d.name;
      $("progress").max = Math.max(d.counts.prompts, 1);
      $("progress").value = done;
      $("progress-text").textContent = done + " / " + d.counts.prompts + " reviewed";
    } catch (e) { say(e.message, true); }
  }

  async function loadNext() {
    const q = new URLSearchParams();
    // the page's own ?tag=&source=&status=&include_empty= narrow (or widen) the queue
    for (const [k, v] of new URLSearchParams(location.search)) if (["tag", "source", "status", "include_empty"].includes(k)) q.append(k, v);
    for (const pid of skipped) q.append("exclude", String(pid));
    const r = await api("GET", "/datasets/" + datasetId + "/review/next?" + q.toString());
    show(r.item);
    refreshProgress();
  }

  async function reload() {
    show(await api("GET", "/prompts/" + item.prompt.id + "/review"), true);
  }

  // Run one action at a time; a failure is shown, and a lost lease moves on.
  async function act(fn) {
    if (busy) return;
    busy = true;
    try {
      await fn();
    } catch (e) {
      say(e.message, true);
      if (e.status === 409 && e.details && e.details.lease_holder) {
        try { await loadNext(); } catch (e2) { say(e2.message, true); }
      }
    } finally {
      busy = false;
    }
  }

  const approve = () => act(async () => {
    if (!item) return;
    const pid = item.prompt.id;
    if (dirty && order.length >= 2) {
      await api("POST", "/prompts/" + pid + "/rankings", { completion_ids: order, ranks: order.map((_, i) => i + 1) });
    }
    await api("POST", "/prompts/" + pid + "/review/approve", {});
    seen.push(pid);
    await loadNext();
    say("approved #" + pid);
  });

  const reject = (reason) => act(async () => {
    const pid = item.prompt.id;
    await api("POST", "/prompts/" + pid + "/review/reject", { reason });
    seen.push(pid);
    await loadNext();
    say("rejected #" + pid);
  });

  const skip = () => act(async () => {
    if (!item) return;
    const pid = item.prompt.id;
    skipped.push(pid);
    seen.push(pid);
    await api("POST", "/prompts/" + pid + "/review/release");
    await loadNext();
    say("skipped #" + pid);
  });

  const back = () => act(async () => {
    const pid = seen.pop();
    if (pid === undefined) { say("nothing to go back to"); return; }
    const i = skipped.indexOf(pid);
    if (i >= 0) skipped.splice(i, 1);
    show(await api("POST", "/prompts/" + pid + "/review/claim"));
    say("back to #" + pid);
  });

  const undo = () => act(async () => {
    if (!item) return;
    const ev = await api("POST", "/prompts/" + item.prompt.id + "/review/undo");
    await reload();
    resetOrder();
    say(ev.comment || "undone");
  });

  function openEdit() {
    if (!item || !completions().length) return;
    const cid = focused ?? order[0];
    const c = completions().find((x) => x.id === cid);
    $("edit-which").textContent = "#" + number(cid);
    $("edit-text").value = c.edited_text ?? c.text;
    $("edit-dialog").dataset.completionId = String(cid);
    $("edit-dialog").showModal();
    $("edit-text").focus();
  }

  const saveEdit = () => act(async () => {
    const dlg = $("edit-dialog");
    const cid = Number(dlg.dataset.completionId);
    const c = completions().find((x) => x.id === cid);
    const value = $("edit-text").value;
    dlg.close();
    await api("PATCH", "/completions/" + cid, { edited_text: value === c.text ? null : value });
    await reload();
    say("saved the edit of #" + number(cid));
  });

  function openReject() {
    if (!item) return;
    $("reject-reason").value = "";
    $("reject-dialog").showModal();
    $("reject-reason").focus();
  }

  $("edit-form").addEventListener("submit", (ev) => { ev.preventDefault(); saveEdit(); });
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
  $("edit-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); saveEdit(); }
  });
  $("reject-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const reason = $("reject-reason").value.trim();
    if (!reason) return;
    $("reject-dialog").close();
    reject(reason);
  });
  $("reject-cancel").addEventListener("click", () => $("reject-dialog").close());

  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("input, textarea, select, dialog")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
    if (/^[1-9]$/.test(ev.key) && item) { ev.preventDefault(); rankKey(Number(ev.key)); return; }
    const actions = { a: approve, r: openReject, e: openEdit, s: skip, k: back, u: undo, Escape: resetOrder };
    const fn = actions[ev.key];
    if (fn) { ev.preventDefault(); fn(); }
  });

  (async () => {
    try {
      await showWho();
      await loadNext();
    } catch (e) {
      say(e.message, true);
    }
  })();
})();
