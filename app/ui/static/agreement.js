// Agreement figures with a bar chart drawn as inline SVG (no chart library, no CDN).
"use strict";

(() => {
  const { api, el, datasetPage, say, pct, num } = Forge;
  const $ = (id) => document.getElementById(id);
  const datasetId = document.querySelector("nav.tabs").dataset.datasetId;
  const SVG = "http://www.w3.org/2000/svg";
  const SERIES = [["confirmed_unchanged", "unchanged"], ["top1_agreement", "top-1"], ["mean_kendall_tau", "mean τ"]];

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Grouped bars, one group per judge model + template; values in [-1, 1] (tau may be negative).
  function chart(groups) {
    const barW = 22, gap = 4, groupGap = 36, left = 44, top = 16, h = 180, bottom = 56;
    const width = left + groups.length * (SERIES.length * (barW + gap) + groupGap) + 120;
    const y = (v) => top + (1 - v) / 2 * h; // 1 at the top, -1 at the bottom
    const root = svg("svg", { viewBox: `0 0 ${width} ${top + h + bottom}`, width, height: top + h + bottom, role: "img",
      "aria-labelledby": "chart-title" });
    root.append(svg("title", { id: "chart-title" }, "Judge agreement per judge model and template"));
    for (const v of [1, 0.5, 0, -0.5, -1]) {
      root.append(svg("line", { x1: left, x2: width - 110, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }));
      root.append(svg("text", { x: left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, String(v)));
    }
    groups.forEach((g, gi) => {
      const x0 = left + 10 + gi * (SERIES.length * (barW + gap) + groupGap);
      SERIES.forEach(([key, label], si) => {
        const v = g[key];
        if (v === null || v === undefined) return;
        const x = x0 + si * (barW + gap);
        const bar = svg("rect", { x, width: barW, y: Math.min(y(v), y(0)), height: Math.max(Math.abs(y(v) - y(0)), 1), class: "bar s" + si,
          "data-series": key });
        bar.append(svg("title", {}, `${g.judge_model || "judge"} ${g.template_version || ""}: ${label} ${num(v)}`));
        root.append(bar);
      });
      const label = (g.judge_model || "(no model)") + (g.template_version ? " · " + g.template_version : "");
      root.append(svg("text", { x: x0, y: top + h + 18, class: "label" }, label.length > 28 ? label.slice(0, 27) + "…" : label));
      root.append(svg("text", { x: x0, y: top + h + 34, class: "tick" }, g.reviewed + " approvals"));
    });
    SERIES.forEach(([, label], si) => {
      root.append(svg("rect", { x: width - 100, y: top + si * 20, width: 12, height: 12, class: "bar s" + si }));
      root.append(svg("text", { x: width - 82, y: top + si * 20 + 11, class: "tick" }, label));
    });
    return root;
  }

  function figure(label, value) {
    return el("div", { class: "figure" }, el("span", { class: "value", text: value }), el("span", { class: "label", text: label }));
  }

  async function show() {
    const r = await api("GET", "/datasets/" + datasetId + "/review/agreement");
    const o = r.overall;
    $("overall").replaceChildren(figure("approvals compared", String(o.reviewed)), figure("unchanged", pct(o.confirmed_unchanged)),
      figure("top-1 agreement", pct(o.top1_agreement)), figure("mean Kendall τ", num(o.mean_kendall_tau)));
    $("by-judge").querySelector("tbody").replaceChildren(...r.by_judge.map((g) => el("tr", {},
      el("th", { scope: "row", text: g.judge_model || "(none)" }), el("td", { text: g.template_version || "" }), el("td", { text: String(g.reviewed) }),
      el("td", { text: pct(g.confirmed_unchanged) }), el("td", { text: pct(g.top1_agreement) }), el("td", { text: num(g.mean_kendall_tau) }),
    )));
    $("no-judge").hidden = r.by_judge.length > 0;
    $("chart").replaceChildren(...(r.by_judge.length ? [chart(r.by_judge)] : []));
    $("chart-figure").hidden = r.by_judge.length === 0;
    const i = r.inter_annotator;
    $("inter").replaceChildren(figure("items", String(i.items)), figure("reviewers", String(i.reviewers)),
      figure("Krippendorff α (ordinal)", num(i.krippendorff_alpha)), figure("mean Kendall W", num(i.mean_kendall_w)));
  }

  (async () => {
    try {
      if (!(await datasetPage())) return;
      await show();
    } catch (e) { say(e.message, true); }
  })();
})();
