// donorcast dashboard, the overview page: every stream with its rates, payers, revenue, top 3 and
// precision so far; totals per channel; search by name and a date range. Refreshes every 3 s.
"use strict";

(() => {
  const D = window.donorcast;
  const { $, el, link, percent, api, query } = D;
  const REFRESH_MS = 3000;
  const state = { last: null, streamSort: { key: null, dir: -1 }, channelSort: { key: "revenue", dir: -1 },
    viewerQuery: "" };

  function filters() {
    return { from: $("from").value, to: $("to").value, search: $("search").value.trim().toLowerCase() };
  }

  function matches(stream, search) {
    if (!search) return true;
    const names = [stream.display_title, stream.stream_id, stream.channel_name,
      ...(stream.top3 || []).map((v) => v.viewer_name || v.viewer_id)];
    return names.some((n) => n && n.toLowerCase().includes(search));
  }

  function top3Cell(stream) {
    const list = el("span", "top3");
    for (const viewer of stream.top3 || []) {
      if (list.childNodes.length) list.appendChild(document.createTextNode(", "));
      list.appendChild(link(`/dashboard/viewer?${query({ viewer: viewer.viewer_id })}`,
        `${D.displayName(viewer.viewer_name, viewer.viewer_id)} (${percent(viewer.probability, 0)})`));
    }
    return list.childNodes.length ? list : el("span", "muted", "—");
  }

  function render() {
    const overview = state.last;
    if (!overview) return;
    const { search } = filters();
    $("currency").textContent = overview.currency;
    for (const node of document.querySelectorAll(".k")) node.textContent = String(overview.k);
    const streams = overview.streams.filter((s) => matches(s, search));
    $("streams-count").textContent = `${streams.length} of ${overview.streams.length}`;
    D.table($("streams"), [
      { key: "display_title", label: "stream", cell: (s) => link(`/dashboard/?${query({ stream: s.stream_id })}`, s.display_title, "stream-link") },
      { key: "state", label: "state", cell: (s) => el("span", `pill pill-${s.state === "ended" ? "wait" : "ok"}`, s.state) },
      { key: "messages_per_minute", label: "msgs/min", num: true, cell: (s) => s.messages_per_minute.toFixed(1) },
      { key: "messages", label: "msgs", num: true },
      { key: "payers", label: "payers", num: true },
      { key: "revenue", label: `revenue (${overview.currency})`, num: true, sort: (s) => s.revenue.total, cell: (s) => D.moneyCell(s.revenue) },
      { key: "counts", label: "counts", sort: (s) => (s.paid_counts || []).length, cell: (s) => D.countsText(s.paid_counts) || "—" },
      { key: "top3", label: "likely donors (top 3)", sort: (s) => (s.top3[0] || {}).probability, cell: top3Cell },
      { key: "precision_at_k", label: `precision@${overview.k}`, num: true, cell: (s) => percent(s.precision_at_k, 0) },
      { key: "first_message_at", label: "date", cell: (s) => D.day(s.first_message_at) },
    ], streams, state.streamSort, render, (tr, s) => { tr.dataset.stream = s.stream_id; });
    $("streams-empty").hidden = streams.length > 0;
    D.table($("channels"), [
      { key: "channel", label: "channel" },
      { key: "streams", label: "streams", num: true },
      { key: "messages", label: "msgs", num: true },
      { key: "payers", label: "payers", num: true },
      { key: "revenue", label: `revenue (${overview.currency})`, num: true, sort: (c) => c.revenue.total, cell: (c) => D.moneyCell(c.revenue) },
    ], overview.channels, state.channelSort, render);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
  }

  async function refresh() {
    const { from, to } = filters();
    try {
      state.last = await api("/api/overview", { from, to, limit: 500 });
      D.setBanner(null);
    } catch (error) {
      D.setBanner(`Cannot load the overview: ${error.message}. Retrying…`);
      return;
    }
    render();
  }

  async function findViewers() {
    const text = $("search").value.trim();
    if (text === state.viewerQuery) return;
    state.viewerQuery = text;
    $("viewer-results").hidden = !text;
    if (!text) return;
    $("viewer-query").textContent = text;
    let viewers = [];
    try {
      viewers = await api("/api/viewers", { q: text, limit: 20 });
    } catch (_) {
      return;
    }
    if (state.viewerQuery !== text) return;
    $("viewers").replaceChildren(...(viewers.length ? viewers.map((v) => el("li", null,
      link(`/dashboard/viewer?${query({ viewer: v.viewer_id })}`, D.displayName(v.viewer_name, v.viewer_id)),
      el("small", "muted", ` ${v.streams} stream${v.streams === 1 ? "" : "s"}, best ${percent(v.best, 0)}`)))
      : [el("li", "muted", "no scored viewer matches")]));
  }

  function start() {
    const params = new URLSearchParams(window.location.search);
    for (const name of ["from", "to", "search"]) if (params.get(name)) $(name).value = params.get(name);
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("search").addEventListener("input", () => { render(); findViewers(); keepInUrl(); });
    for (const name of ["from", "to"]) $(name).addEventListener("change", () => { keepInUrl(); refresh(); });
    refresh();
    findViewers();
    window.setInterval(refresh, REFRESH_MS);
  }

  function keepInUrl() {
    const url = new URL(window.location.href);
    url.searchParams.delete("token");
    for (const name of ["from", "to", "search"]) {
      const value = $(name).value.trim();
      if (value) url.searchParams.set(name, value);
      else url.searchParams.delete(name);
    }
    window.history.replaceState(null, "", url);
  }

  start();
})();
