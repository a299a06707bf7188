// The review screen: lease an item, show its answers (markdown or raw, in a grid, columns or tabs,
// scrolling together), rank them into tie buckets (keys or drag), approve / reject / skip / back /
// undo, edit with a word diff against the original, comment, read the guidelines. Model text goes
// through Forge.showText (markdown-it without raw HTML, then DOMPurify) or textContent only.
"use strict";

(() => {
  const { api, el, requireAuth, showWho, showText, wordDiff, flagChip, chip, say, when, applyRole, can } = Forge;
  if (!requireAuth()) return;

  const root = document.getElementById("review");
  const datasetId = root.dataset.datasetId;
  const $ = (id) => document.getElementById(id);
  const PREFS = "forge.review.prefs";

  let item = null;        // the ReviewItem on screen
  let buckets = [];       // [[completion id, ...], ...]: best first, a bucket holds ties
  let dirty = false;      // the buckets differ from the ranking on record
  let typed = [];         // keys typed so far: buckets of card numbers
  let tieNext = false;    // "=" was pressed: the next number joins the last bucket
  let focused = null;     // completion id picked (click / focus a card)
  let activeTab = 0;      // tabs layout: the card shown
  let busy = false;
  let syncing = false;
  let me = null;
  const seen = [];        // prompt ids reviewed or skipped, for going back
  const skipped = [];
  const prefs = Object.assign({ layout: "grid", height: 100, sync: true, raw: false, side: true }, loadPrefs());
  const diffOpen = new Set(); // completion ids whose card shows the diff

  function loadPrefs() { try { return JSON.parse(localStorage.getItem(PREFS)) || {}; } catch { return {}; } }
  function savePrefs() { localStorage.setItem(PREFS, JSON.stringify(prefs)); }

  const completions = () => (item ? item.completions : []);
  const number = (cid) => completions().findIndex((c) => c.id === cid) + 1;
  const shownText = (c) => c.edited_text ?? c.text;
  const flat = () => buckets.flat();

  // ---- ranking as tie buckets ------------------------------------------------------------------
  // ranks: 1 + the number of answers in better buckets (standard competition numbering)
  function ranksOf(bs) {
    const out = new Map();
    let better = 0;
    for (const b of bs) { for (const cid of b) out.set(cid, better + 1); better += b.length; }
    return out;
  }

  function bucketsFrom(ranking) {
    const rank = new Map();
    if (ranking) ranking.completion_ids.forEach((cid, i) => rank.set(cid, ranking.ranks[i]));
    const byRank = new Map();
    const rest = [];
    for (const c of completions()) {
      if (rank.has(c.id)) { const r = rank.get(c.id); if (!byRank.has(r)) byRank.set(r, []); byRank.get(r).push(c.id); } else rest.push([c.id]);
    }
    return [...[...byRank.entries()].sort((a, b) => a[0] - b[0]).map(([, ids]) => ids), ...rest];
  }

  function baseline(it) {
    const ranking = it.my_ranking || it.judge_ranking;
    const bs = bucketsFrom(ranking);
    const covered = ranking && it.completions.every((c) => ranking.completion_ids.includes(c.id));
    return { bs, dirty: it.completions.length >= 2 && !covered };
  }

  function describe(bs) { return bs.map((b) => b.map((cid) => "#" + number(cid)).join(" = ")).join(" > "); }

  function setBuckets(bs) {
    buckets = bs.filter((b) => b.length);
    dirty = true;
    render();
  }

  // Move a completion one step left (-1) or right (+1) through "own place before bucket i",
  // "in bucket i", "own place after bucket i": each step either ties it or unties it.
  function step(cid, dir) {
    const bi = buckets.findIndex((b) => b.includes(cid));
    const alone = buckets[bi].length === 1;
    const bs = buckets.map((b) => b.filter((x) => x !== cid));
    if (alone) {
      const target = bi + dir; // join the neighbour bucket
      if (target < 0 || target >= buckets.length) return;
      bs[target].push(cid);
    } else {
      bs.splice(dir < 0 ? bi : bi + 1, 0, [cid]); // its own place just before / after
    }
    setBuckets(bs);
    const chipNode = document.querySelector(`#order button[data-completion-id='${cid}']`);
    if (chipNode) chipNode.focus();
  }

  function rankKey(n) {
    const k = completions().length;
    if (n > k || k < 2 || typed.flat().includes(n)) return;
    if (tieNext && typed.length) typed[typed.length - 1].push(n); else typed.push([n]);
    tieNext = false;
    const placed = typed.flat().length;
    if (placed === k || placed === k - 1) {
      const ids = typed.map((b) => b.map((m) => completions()[m - 1].id));
      const left = completions().map((c) => c.id).filter((cid) => !ids.flat().includes(cid));
      typed = [];
      setBuckets(left.length ? [...ids, left] : ids);
    } else {
      renderOrder();
    }
  }

  function tieKey() {
    if (!typed.length) return;
    tieNext = true;
    renderOrder();
  }

  // ---- rendering -------------------------------------------------------------------------------
  function show(it, keepOrder) {
    item = it;
    typed = [];
    tieNext = false;
    if (!it) {
      $("item").hidden = true;
      $("empty").hidden = false;
      history.replaceState(null, "", "/ui/datasets/" + datasetId + "/review" + location.search);
      return;
    }
    const ids = it.completions.map((c) => c.id);
    const same = keepOrder && flat().length === ids.length && flat().every((cid) => ids.includes(cid));
    if (!same) {
      const b = baseline(it);
      buckets = b.bs;
      dirty = b.dirty;
      focused = null;
      activeTab = 0;
      diffOpen.clear();
    }
    $("empty").hidden = true;
    $("item").hidden = false;
    history.replaceState(null, "", "/ui/datasets/" + datasetId + "/items/" + it.prompt.id + location.search);
    render();
    loadComments();
  }

  function render() {
    const it = item;
    const p = it.prompt;
    $("item").dataset.promptId = String(p.id);
    $("prompt-id").textContent = "#" + p.id;
    showText($("prompt-text"), p.text, prefs.raw);
    const verdict = it.my_verdict ? [chip("you " + it.my_verdict.decision, it.my_verdict.decision)] : [];
    $("prompt-meta").replaceChildren(
      chip(p.review_status), ...p.tags.map((t) => chip("tag: " + t)), ...p.flag_reasons.map((f) => flagChip(f, p.meta)), ...verdict,
      ...(p.reviewed_by.length ? [chip("reviewed by " + p.reviewed_by.join(", "))] : []),
      ...(it.lease && me && it.lease.holder !== me ? [chip("held by " + it.lease.holder, "flag")] : []),
    );
    renderJudge();
    renderOrder();
    renderCards();
    warnSimilar();
    renderCommentTargets();
  }

  function renderJudge() {
    const j = item.judge_ranking;
    if (!j) {
      $("judge-line").textContent = "no judge ranking";
      $("judge-order").textContent = "";
      $("judge-flags").replaceChildren();
      $("judge-rationale").replaceChildren();
      return;
    }
    const parts = [j.judge_model || "judge", j.template_version ? "template " + j.template_version : null,
      j.consistency !== null ? "consistency " + j.consistency.toFixed(2) : null, j.review_status];
    $("judge-line").textContent = parts.filter(Boolean).join(" · ");
    $("judge-order").textContent = "ranks: " + describe(bucketsFrom(j));
    $("judge-flags").replaceChildren(...j.flag_reasons.map((f) => flagChip(f, j.details)));
    showText($("judge-rationale"), j.rationale || "", prefs.raw);
  }

  function renderOrder() {
    const rank = ranksOf(buckets);
    const list = $("order");
    const gap = (at) => {
      const g = el("li", { class: "gap", "aria-hidden": "true", "data-gap": String(at) });
      dropTarget(g, (moved) => { const bs = buckets.map((b) => b.filter((x) => x !== moved)); bs.splice(at, 0, [moved]); setBuckets(bs); });
      return g;
    };
    const items = [gap(0)];
    buckets.forEach((b, bi) => {
      const li = el("li", { class: b.length > 1 ? "bucket tie" : "bucket", "data-rank": String(rank.get(b[0])),
        "aria-label": "rank " + rank.get(b[0]) + (b.length > 1 ? " (tie)" : "") },
        el("span", { class: "bucket-rank", text: String(rank.get(b[0])) }),
        ...b.map((cid) => {
          const btn = el("button", { type: "button", class: "rank-chip", draggable: true, "data-completion-id": String(cid), text: "#" + number(cid),
            "aria-label": "answer " + number(cid) + ", rank " + rank.get(cid) + (b.length > 1 ? ", tied" : "") + "; arrow keys move it" });
          btn.addEventListener("dragstart", (ev) => { ev.dataTransfer.setData("text/plain", String(cid)); btn.classList.add("dragging"); list.classList.add("dragging"); });
          btn.addEventListener("dragend", () => { btn.classList.remove("dragging"); list.classList.remove("dragging"); });
          btn.addEventListener("keydown", (ev) => {
            if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") { ev.preventDefault(); ev.stopPropagation(); step(cid, -1); }
            if (ev.key === "ArrowRight" || ev.key === "ArrowDown") { ev.preventDefault(); ev.stopPropagation(); step(cid, 1); }
          });
          btn.addEventListener("click", () => pick(cid, true));
          return btn;
        }));
      dropTarget(li, (moved) => { const bs = buckets.map((x) => x.filter((y) => y !== moved)); bs[bi].push(moved); setBuckets(bs); });
      items.push(li, gap(bi + 1));
    });
    list.replaceChildren(...items);
    const pendingText = typed.length ? "typed: " + typed.map((b) => b.map((n) => "#" + n).join(" = ")).join(" > ") + (tieNext ? " = …" : " > …") : "";
    $("pending").textContent = pendingText || (dirty ? "not saved yet: approve saves it" : "");
  }

  function dropTarget(node, onDrop) {
    node.addEventListener("dragover", (ev) => { ev.preventDefault(); node.classList.add("over"); });
    node.addEventListener("dragleave", () => node.classList.remove("over"));
    node.addEventListener("drop", (ev) => {
      ev.preventDefault();
      node.classList.remove("over");
      const moved = Number(ev.dataTransfer.getData("text/plain"));
      if (flat().includes(moved)) onDrop(moved);
    });
  }

  function renderCards() {
    const rank = ranksOf(buckets);
    const judgeRank = new Map();
    const j = item.judge_ranking;
    if (j) j.completion_ids.forEach((cid, i) => judgeRank.set(cid, j.ranks[i]));
    const tied = new Set(buckets.filter((b) => b.length > 1).flat());
    const cards = completions().map((c, i) => {
      const edited = c.edited_text !== null;
      const body = el("div", { class: "completion-text", tabIndex: -1 });
      if (edited && diffOpen.has(c.id)) {
        body.classList.add("diff");
        body.append(wordDiff(c.text, c.edited_text));
      } else {
        showText(body, shownText(c), prefs.raw);
      }
      body.addEventListener("scroll", () => syncScroll(body));
      const card = el("article", { class: "card" + (rank.get(c.id) === 1 ? " top" : ""), tabIndex: 0, "data-completion-id": String(c.id),
        id: "answer-" + (i + 1), role: prefs.layout === "tabs" ? "tabpanel" : null, "aria-label": "answer " + (i + 1) },
        el("header", {},
          el("span", { class: "num", text: "#" + (i + 1) }),
          chip(c.source === "human" ? "human: " + (c.author || "") : c.source === "imported" ? "imported" : (c.model || "model")),
          ...(judgeRank.has(c.id) ? [chip("judge " + judgeRank.get(c.id))] : []),
          ...c.flag_reasons.map((f) => flagChip(f, c.meta)),
          edited && !c.flag_reasons.includes("edited") ? chip("edited", "edited") : null,
          el("span", { class: "similar-chips" }),
          el("span", { class: "rank", text: "rank " + rank.get(c.id) + (tied.has(c.id) ? " (tie)" : "") }),
          edited ? el("button", { type: "button", class: "small diff-toggle", "aria-pressed": String(diffOpen.has(c.id)), text: diffOpen.has(c.id) ? "Text" : "Diff",
            "aria-label": (diffOpen.has(c.id) ? "show the edited text of answer " : "show the changes to answer ") + (i + 1),
            onclick: (ev) => { ev.stopPropagation(); diffOpen.has(c.id) ? diffOpen.delete(c.id) : diffOpen.add(c.id); renderCards(); } }) : null,
          can("annotator") ? el("button", { type: "button", class: "small", text: "Edit", "aria-label": "edit answer " + (i + 1),
            onclick: (ev) => { ev.stopPropagation(); focused = c.id; openEdit(); } }) : null,
        ),
        body,
      );
      if (focused === c.id) card.classList.add("focused");
      if (prefs.layout === "tabs" && i !== activeTab) card.hidden = true;
      card.addEventListener("click", () => pick(c.id));
      card.addEventListener("focus", () => pick(c.id));
      return card;
    });
    $("completions").replaceChildren(...cards);
    $("completions").className = "completions layout-" + prefs.layout;
    renderTabs();
    fitPanes();
  }

  function pick(cid, quiet) {
    if (focused === cid) return;
    focused = cid;
    for (const card of document.querySelectorAll("#completions article")) card.classList.toggle("focused", Number(card.dataset.completionId) === cid);
    if (!quiet) say("picked answer #" + number(cid) + " (e edits it, c comments on it)");
    $("comment-target").value = String(cid);
  }

  function renderTabs() {
    const tabs = $("tabs");
    tabs.hidden = prefs.layout !== "tabs";
    if (tabs.hidden) { tabs.replaceChildren(); return; }
    tabs.replaceChildren(...completions().map((c, i) => el("button", { type: "button", role: "tab", id: "tab-" + (i + 1),
      "aria-selected": String(i === activeTab), "aria-controls": "answer-" + (i + 1), tabIndex: i === activeTab ? 0 : -1,
      text: "#" + (i + 1) + " · rank " + ranksOf(buckets).get(c.id), onclick: () => selectTab(i) })));
  }

  function selectTab(i) {
    activeTab = (i + completions().length) % completions().length;
    renderCards();
    const t = $("tab-" + (activeTab + 1));
    if (t) t.focus();
  }
  $("tabs").addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowRight") { ev.preventDefault(); ev.stopPropagation(); selectTab(activeTab + 1); }
    if (ev.key === "ArrowLeft") { ev.preventDefault(); ev.stopPropagation(); selectTab(activeTab - 1); }
  });

  // Panes fill the screen below the ranking row (scaled by the height slider); long answers scroll inside.
  function fitPanes() {
    const box = $("completions");
    if (!box.firstChild) return;
    const top = box.getBoundingClientRect().top + window.scrollY;
    const k = completions().length;
    const rows = prefs.layout === "grid" ? Math.ceil(k / 2) : 1;
    const free = Math.max(window.innerHeight - top - 12, 240);
    const per = Math.max((free - (rows - 1) * 8) / rows, 160) * (prefs.height / 100);
    box.style.setProperty("--pane-h", Math.round(per) + "px");
  }
  window.addEventListener("resize", () => { if (item) fitPanes(); });
  // what sits above the panes may grow (a wrapped bar, an opened prompt): keep them on screen
  const above = new ResizeObserver(() => { if (item) fitPanes(); });
  for (const node of document.querySelectorAll(".review-bar, #prompt-box, .rank-row, #similar-warning, #message")) above.observe(node);

  function syncScroll(source) {
    if (!prefs.sync || syncing) return;
    syncing = true;
    const max = source.scrollHeight - source.clientHeight;
    const f = max > 0 ? source.scrollTop / max : 0;
    for (const other of document.querySelectorAll("#completions .completion-text")) {
      if (other !== source) other.scrollTop = f * (other.scrollHeight - other.clientHeight);
    }
    requestAnimationFrame(() => { syncing = false; });
  }

  // ---- identical and near-identical answers ----------------------------------------------------
  function shingles(text) {
    const words = text.toLowerCase().split(/\s+/).filter(Boolean);
    const out = new Set();
    if (words.length < 3) { out.add(words.join(" ")); return out; }
    for (let i = 0; i + 3 <= words.length; i++) out.add(words.slice(i, i + 3).join(" "));
    return out;
  }
  function jaccard(a, b) {
    let common = 0;
    for (const x of a) if (b.has(x)) common++;
    const union = a.size + b.size - common;
    return union ? common / union : 1;
  }
  function warnSimilar() {
    const cs = completions();
    const norm = cs.map((c) => shownText(c).replace(/\s+/g, " ").trim());
    const sh = cs.map((c) => shingles(shownText(c)));
    const notes = [];
    const marks = new Map();
    for (let i = 0; i < cs.length; i++) {
      for (let j = i + 1; j < cs.length; j++) {
        let what = null;
        if (shownText(cs[i]) === shownText(cs[j])) what = "identical";
        else if (norm[i] === norm[j]) what = "identical apart from white space";
        else {
          const s = jaccard(sh[i], sh[j]);
          if (s >= 0.8) what = "nearly identical (" + Math.round(s * 100) + "% of word triples shared)";
        }
        if (what) {
          notes.push("Answers #" + (i + 1) + " and #" + (j + 1) + " are " + what + ".");
          for (const [a, b] of [[i, j], [j, i]]) { if (!marks.has(a)) marks.set(a, []); marks.get(a).push(b + 1); }
        }
      }
    }
    $("similar-warning").hidden = notes.length === 0;
    $("similar-warning").textContent = notes.join(" ");
    for (const [i, others] of marks) {
      const span = document.querySelector(`#completions article[data-completion-id='${cs[i].id}'] .similar-chips`);
      if (span) span.replaceChildren(chip("same as " + others.map((n) => "#" + n).join(", "), "flag"));
    }
  }

  // ---- comments and history --------------------------------------------------------------------
  function renderCommentTargets() {
    const sel = $("comment-target");
    const keep = sel.value;
    sel.replaceChildren(el("option", { value: "", text: "the item" }),
      ...completions().map((c, i) => el("option", { value: String(c.id), text: "answer #" + (i + 1) })));
    sel.value = completions().some((c) => String(c.id) === keep) ? keep : "";
  }

  async function loadComments() {
    const pid = item.prompt.id;
    const events = (await api("GET", "/prompts/" + pid + "/history")).data;
    if (!item || item.prompt.id !== pid) return;
    const comments = events.filter((e) => e.action === "comment");
    $("comments").replaceChildren(...comments.map((e) => el("li", { "data-event-id": String(e.id) },
      el("div", { class: "comment-meta small muted", text: e.actor + " · " + when(e.created_at)
        + (e.target_type === "completion" ? " · on answer #" + number(e.target_id) : " · on the item") }),
      el("div", { class: "comment-text", text: e.comment || "" }))));
    if (!comments.length) $("comments").replaceChildren(el("li", { class: "muted small", text: "No comments yet." }));
    $("history").replaceChildren(...events.filter((e) => e.action !== "comment").map((e) => el("li", {
      text: when(e.created_at) + " · " + e.actor + " · " + e.action + (e.comment ? ": " + e.comment : "") })));
  }

  $("comment-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("comment-text").value.trim();
    if (!text || !item) return;
    act(async () => {
      const target = $("comment-target").value;
      await api("POST", "/prompts/" + item.prompt.id + "/review/comments", target ? { text, completion_id: Number(target) } : { text });
      $("comment-text").value = "";
      await loadComments();
      say("comment added");
      refreshProgress();
    });
  });

  // ---- progress and guidelines -----------------------------------------------------------------
  async function refreshProgress() {
    try {
      const p = await api("GET", "/datasets/" + datasetId + "/review/progress");
      $("progress").max = Math.max(p.verdicts_wanted, 1);
      $("progress").value = p.verdicts_given;
      const approvedRankings = (p.rankings_by_status.approved || 0);
      const totalRankings = Object.values(p.rankings_by_status).reduce((a, b) => a + b, 0);
      const approvedCompletions = (p.completions_by_status.approved || 0);
      const totalCompletions = Object.values(p.completions_by_status).reduce((a, b) => a + b, 0);
      $("progress-text").textContent = p.verdicts_given + " / " + p.verdicts_wanted + " reviewed";
      $("progress-detail").textContent = "rankings " + approvedRankings + "/" + totalRankings + " · answers " + approvedCompletions + "/" + totalCompletions + " approved";
      const mine = p.reviewers.find((r) => r.reviewer === me);
      $("progress-detail").title = $("progress-detail").textContent;
      $("my-progress").textContent = mine ? "you: " + mine.approved + " approved, " + mine.rejected + " rejected, " + mine.rankings + " rankings, "
        + mine.edits + " edits, " + mine.comments + " comments" : "you: nothing yet";
      $("my-progress").title = $("my-progress").textContent;
    } catch (e) { say(e.message, true); }
  }

  async function loadDataset() {
    const d = await api("GET", "/datasets/" + datasetId);
    $("dataset-name").textContent = d.name;
    document.title = d.name + " · review";
    const g = (d.settings || {}).guidelines;
    if (g) showText($("guidelines"), g, false);
    else $("guidelines").replaceChildren(el("p", { class: "muted", text: "No guidelines for this dataset yet. " }),
      el("a", { href: "/ui/datasets/" + datasetId + "#settings-h", text: "Write them in the settings." }));
  }

  // ---- actions ---------------------------------------------------------------------------------
  function queueQuery() {
    const q = new URLSearchParams();
    // the page's own ?tag=&source=&status=&include_empty= narrow (or widen) the queue
    for (const [k, v] of new URLSearchParams(location.search)) if (["tag", "source", "status", "include_empty"].includes(k)) q.append(k, v);
    for (const pid of skipped) q.append("exclude", String(pid));
    return q;
  }

  async function loadNext() {
    const r = await api("GET", "/datasets/" + datasetId + "/review/next?" + queueQuery().toString());
    show(r.item);
    refreshProgress();
  }

  async function openItem(pid) {
    try {
      show(await api("POST", "/prompts/" + pid + "/review/claim"));
    } catch (e) {
      if (e.status !== 409 && e.status !== 403) throw e;
      show(await api("GET", "/prompts/" + pid + "/review")); // someone else holds it: look, don't touch
      say(e.message, true);
    }
    if (item && String(item.prompt.dataset_id) !== String(datasetId)) {
      say("prompt " + pid + " belongs to dataset " + item.prompt.dataset_id, true);
    }
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
    if (dirty && flat().length >= 2) {
      const rank = ranksOf(buckets);
      const ids = flat();
      await api("POST", "/prompts/" + pid + "/rankings", { completion_ids: ids, ranks: ids.map((cid) => rank.get(cid)) });
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
    refreshProgress();
    say("back to #" + pid);
  });

  const undo = () => act(async () => {
    if (!item) return;
    const ev = await api("POST", "/prompts/" + item.prompt.id + "/review/undo");
    await reload();
    resetOrder();
    refreshProgress();
    say(ev.comment || "undone");
  });

  function resetOrder() {
    if (!item) return;
    const b = baseline(item);
    buckets = b.bs;
    dirty = b.dirty;
    typed = [];
    tieNext = false;
    render();
  }

  // ---- edit with a live word diff --------------------------------------------------------------
  let diffTimer = null;
  function editDiff() {
    const c = completions().find((x) => x.id === Number($("edit-dialog").dataset.completionId));
    if (c) $("edit-diff").replaceChildren(wordDiff(c.text, $("edit-text").value));
  }

  function openEdit() {
    if (!item || !completions().length) return;
    const cid = focused ?? flat()[0];
    const c = completions().find((x) => x.id === cid);
    $("edit-which").textContent = "#" + number(cid);
    $("edit-text").value = shownText(c);
    $("edit-dialog").dataset.completionId = String(cid);
    editDiff();
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
    if (value !== c.text) diffOpen.add(cid); else diffOpen.delete(cid);
    await reload();
    refreshProgress();
    say("saved the edit of #" + number(cid));
  });

  function openReject() {
    if (!item) return;
    $("reject-reason").value = "";
    $("reject-dialog").showModal();
    $("reject-reason").focus();
  }

  function openComment() {
    if (!item) return;
    if (!prefs.side) toggleSide();
    $("comment-target").value = focused ? String(focused) : "";
    $("comment-text").focus();
  }

  // ---- view preferences ------------------------------------------------------------------------
  function applyPrefs() {
    $("layout").value = prefs.layout;
    $("pane-height").value = String(prefs.height);
    $("sync-scroll").checked = prefs.sync;
    $("raw-toggle").setAttribute("aria-pressed", String(prefs.raw));
    $("raw-toggle").textContent = prefs.raw ? "Markdown" : "Raw";
    $("side-toggle").setAttribute("aria-pressed", String(prefs.side));
    $("side").hidden = !prefs.side;
    $("item").classList.toggle("no-side", !prefs.side);
  }
  function setPref(key, value) {
    prefs[key] = value;
    savePrefs();
    applyPrefs();
    if (item) render();
  }
  function toggleSide() { setPref("side", !prefs.side); }
  const LAYOUTS = ["grid", "columns", "tabs"];

  $("layout").addEventListener("change", () => setPref("layout", $("layout").value));
  $("pane-height").addEventListener("input", () => { prefs.height = Number($("pane-height").value); savePrefs(); fitPanes(); });
  $("sync-scroll").addEventListener("change", () => setPref("sync", $("sync-scroll").checked));
  $("raw-toggle").addEventListener("click", () => setPref("raw", !prefs.raw));
  $("side-toggle").addEventListener("click", toggleSide);
  $("prompt-box").addEventListener("toggle", () => fitPanes());

  $("approve").addEventListener("click", approve);
  $("reject").addEventListener("click", openReject);
  $("skip").addEventListener("click", skip);
  $("back").addEventListener("click", back);
  $("undo").addEventListener("click", undo);
  $("reset").addEventListener("click", resetOrder);

  $("edit-form").addEventListener("submit", (ev) => { ev.preventDefault(); saveEdit(); });
  $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
  $("edit-revert").addEventListener("click", () => {
    const c = completions().find((x) => x.id === Number($("edit-dialog").dataset.completionId));
    $("edit-text").value = c.text;
    editDiff();
  });
  $("edit-text").addEventListener("input", () => { clearTimeout(diffTimer); diffTimer = setTimeout(editDiff, 150); });
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
    const view = { m: () => setPref("raw", !prefs.raw), g: toggleSide, l: () => setPref("layout", LAYOUTS[(LAYOUTS.indexOf(prefs.layout) + 1) % LAYOUTS.length]) };
    if (!can("annotator")) { if (view[ev.key]) { ev.preventDefault(); view[ev.key](); } return; } // a viewer reads only
    if (/^[1-9]$/.test(ev.key) && item) { ev.preventDefault(); rankKey(Number(ev.key)); return; }
    if (ev.key === "=" && item) { ev.preventDefault(); tieKey(); return; }
    const actions = { a: approve, r: openReject, e: openEdit, s: skip, k: back, u: undo, Escape: resetOrder, c: openComment, ...view };
    const fn = actions[ev.key];
    if (fn) { ev.preventDefault(); fn(); }
  });

  (async () => {
    applyPrefs();
    try {
      me = await showWho();
      applyRole();
      await loadDataset();
      const start = root.dataset.startPromptId;
      if (start) await openItem(Number(start)); else await loadNext();
    } catch (e) {
      say(e.message, true);
    }
  })();
})();
