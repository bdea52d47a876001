// donorcast dashboard: what every page shares (text-only DOM helpers, the API, formatting, charts,
// sortable tables). Plain JS, no build step; charts are uPlot, vendored under static/vendor/.
//
// Everything the server sends (chat text, names, ids, amounts) is data: it only ever reaches the page
// through textContent / createTextNode / attributes, never innerHTML. The server's
// Content-Security-Policy forbids inline and foreign scripts on top of that.
"use strict";

window.donorcast = (() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(window.location.search).get("token");

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function link(href, text, className) {
    const a = el("a", className, text);
    a.setAttribute("href", href);
    return a;
  }

  // ------------------------------------------------------------ formatting

  function percent(p, digits = 1) {
    return p === null || p === undefined ? "—" : `${(p * 100).toFixed(digits)} %`;
  }

  function lift(x) {
    return x === null || x === undefined ? "—" : `${x < 10 ? x.toFixed(1) : Math.round(x)}×`;
  }

  function money(amount, currency, text) {
    if (amount === null || amount === undefined) return text || "";
    if (!currency || currency === "XXX") return text || amount.toFixed(2);
    try {
      return new Intl.NumberFormat("en", { style: "currency", currency }).format(amount);
    } catch (_) {
      return `${amount.toFixed(2)} ${currency}`;
    }
  }

  // The per-currency breakdown a total came from, one line per currency (shown on hover).
  function breakdownText(revenue) {
    if (!revenue || !revenue.by_currency || !revenue.by_currency.length) return "no payments in money yet";
    const fmt = (x) => x.toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    return revenue.by_currency.map((r) => `${fmt(r.amount)} ${r.currency} → ${fmt(r.converted)} ${revenue.currency}`
      + ` (${r.events} payment${r.events === 1 ? "" : "s"}, ${r.rates})`).join("\n");
  }

  // A total in the display currency; its breakdown per currency as the hover title.
  function moneyCell(revenue) {
    const span = el("span", "money", money(revenue ? revenue.total : 0, revenue ? revenue.currency : "USD"));
    span.title = breakdownText(revenue);
    span.dataset.breakdown = span.title;
    return span;
  }

  function countsText(counts) {
    return (counts || []).map((c) => `${c.count.toLocaleString("en")} ${c.unit}`).join(", ");
  }

  function clock(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso)
      : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function day(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().slice(0, 10);
  }

  function kindLabel(kind) {
    return {
      paid_message: "Super Chat", paid_sticker: "Super Sticker", membership_new: "membership",
      membership_gift: "gifted memberships", bits: "bits", subscription: "sub",
      gift_subscription: "gifted subs", donation: "donation",
    }[kind] || kind;
  }

  // A paid event: money in its currency; a count (bits, gifts) as a count, never as money.
  function paidText(p) {
    if (p.amount !== null && p.amount !== undefined && p.currency && p.currency !== "XXX") {
      return money(p.amount, p.currency, p.amount_text);
    }
    if (p.amount !== null && p.amount !== undefined) return `${Math.round(p.amount).toLocaleString("en")} ${kindLabel(p.kind)}`;
    return p.amount_text || kindLabel(p.kind);
  }

  // A paid event in the display currency, its own amount and the rate on hover; counts as counts.
  function paidNode(p) {
    if (p.display_amount === null || p.display_amount === undefined) return el("span", "paid-count", paidText(p));
    const span = el("span", "money", money(p.display_amount, p.display_currency));
    span.title = p.currency === p.display_currency ? paidText(p) : `${paidText(p)} (${p.rate})`;
    return span;
  }

  function displayName(name, id) {
    return name || (id && id.startsWith("name:") ? id.slice(5) : id) || "?";
  }

  function lowConfidence(n) {
    return el("span", "tag tag-low", `${n} msg${n === 1 ? "" : "s"}, low confidence`);
  }

  // ------------------------------------------------------------ API

  async function api(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, String(value));
    }
    const headers = token ? { "X-Donorcast-Token": token } : {};
    const response = await fetch(url, { headers, credentials: "same-origin", cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.error || (body.problems || []).join("; ") || response.statusText);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) search.set(key, String(value));
    return search.toString();
  }

  function setBanner(text) {
    const banner = $("banner");
    if (!banner) return;
    banner.textContent = text || "";
    banner.hidden = !text;
  }

  // ------------------------------------------------------------ charts (uPlot)

  // One uPlot per holder, kept and fed new data (no flicker, no leak); rebuilt when its shape changes.
  // `spec`: {xLabel, series: [{label, stroke, fill?, scale?, bars?, points?, stepped?}], axes: [{scale, label, side?}]}
  function chart(holder, spec, data) {
    const width = Math.max(240, holder.clientWidth || 300);
    const height = spec.height || 210;
    const key = JSON.stringify([spec.series.map((s) => s.label), width]);
    if (holder.__plot && holder.__key === key) {
      holder.__plot.setData(data);
      return holder.__plot;
    }
    if (holder.__plot) holder.__plot.destroy();
    const bars = window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.8, 40] }) : undefined;
    const stepped = window.uPlot.paths.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined;
    const opts = {
      width, height,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      // counts and cumulative money: every axis starts at zero, stream time at the stream's start
      scales: Object.fromEntries([["x", { time: false, range: (u, min, max) => [0, Math.max(1, max)] }],
        ...spec.axes.map((a) => [a.scale, { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] }])]),
      series: [
        { label: spec.xLabel, value: (u, v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)} min`) },
        ...spec.series.map((s) => ({
          label: s.label, stroke: s.stroke, fill: s.fill, scale: s.scale || "y", width: s.points ? 0 : 1.5,
          paths: s.bars ? bars : s.stepped ? stepped : undefined,
          points: s.points ? { show: true, size: 7, fill: s.stroke } : { show: false },
          value: s.value,
        })),
      ],
      axes: [
        { label: spec.xLabel, labelSize: 20, size: 36 },
        ...spec.axes.map((a) => ({ scale: a.scale, label: a.label, side: a.side ?? 3, labelSize: 20, size: 50,
          grid: { show: a.side !== 1 }, values: a.values })),
      ],
    };
    holder.replaceChildren();
    // uPlot draws axis labels on its canvas; say them to assistive technology too
    holder.setAttribute("aria-label", `${spec.axes.map((a) => a.label).join(" and ")} over ${spec.xLabel}`);
    holder.__plot = new window.uPlot(opts, data, holder);
    holder.__key = key;
    return holder.__plot;
  }

  // ------------------------------------------------------------ sortable tables

  // columns: [{key, label, sort(row) -> number|string, cell(row) -> Node|string, num?}]
  // state: {key, dir} kept by the caller, so a live refresh keeps the analyst's order.
  function table(tableEl, columns, rows, state, onSort, decorate) {
    const head = el("tr");
    for (const column of columns) {
      const th = el("th", column.num ? "num sortable" : "sortable", column.label);
      th.dataset.key = column.key;
      if (state.key === column.key) th.classList.add(state.dir > 0 ? "sorted-up" : "sorted-down");
      th.title = "sort";
      th.addEventListener("click", () => {
        state.dir = state.key === column.key ? -state.dir : (column.num ? -1 : 1);
        state.key = column.key;
        onSort();
      });
      head.appendChild(th);
    }
    const column = columns.find((c) => c.key === state.key);
    const sorted = column ? [...rows].sort((a, b) => {
      const x = column.sort ? column.sort(a) : a[column.key];
      const y = column.sort ? column.sort(b) : b[column.key];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * state.dir;
    }) : rows;
    const body = document.createDocumentFragment();
    for (const row of sorted) {
      const tr = el("tr");
      for (const c of columns) tr.appendChild(el("td", c.num ? "num" : null, c.cell ? c.cell(row) : row[c.key]));
      if (decorate) decorate(tr, row);
      body.appendChild(tr);
    }
    const thead = tableEl.tHead || tableEl.createTHead();
    thead.replaceChildren(head);
    const tbody = tableEl.tBodies[0] || tableEl.createTBody();
    tbody.replaceChildren(body);
  }

  return { $, el, link, percent, lift, money, moneyCell, breakdownText, countsText, clock, day, kindLabel,
    paidText, paidNode, displayName, lowConfidence, api, query, setBanner, chart, table, token };
})();
