// donorcast dashboard, the viewer page: one viewer's streams, scores and payments across streams.
"use strict";

(() => {
  const D = window.donorcast;
  const { $, el, link, percent, api, query } = D;
  const viewerId = new URLSearchParams(window.location.search).get("viewer") || "";
  const state = { last: null, streamSort: { key: "last_at", dir: -1 }, paymentSort: { key: "time", dir: -1 } };

  function render() {
    const viewer = state.last;
    $("viewer-name").textContent = D.displayName(viewer.viewer_name, viewer.viewer_id);
    document.title = `donorcast — ${D.displayName(viewer.viewer_name, viewer.viewer_id)}`;
    $("viewer-meta").textContent = viewer.viewer_id;
    const tiles = [["streams", viewer.streams.length],
      ["messages", viewer.streams.reduce((n, s) => n + s.messages, 0)],
      ["payments", viewer.payments.length], ["paid in money", D.moneyCell(viewer.revenue)]];
    $("viewer-tiles").replaceChildren(...tiles.map(([label, value]) => el("div", "tile", el("dt", null, label), el("dd", null, value))));
    const titles = new Map(viewer.streams.map((s) => [s.stream_id, s.display_title]));
    D.table($("viewer-streams"), [
      { key: "display_title", label: "stream", cell: (s) => link(`/dashboard/?${query({ stream: s.stream_id, viewer: viewer.viewer_id })}`, s.display_title) },
      { key: "messages", label: "msgs", num: true, cell: (s) => (s.low_confidence && s.n_messages ? D.lowConfidence(s.n_messages) : s.messages) },
      { key: "probability", label: "chance to pay", num: true, cell: (s) => percent(s.probability) },
      { key: "rank", label: "rank", num: true, cell: (s) => (s.rank ? `#${s.rank}` : "—") },
      { key: "paid_events", label: "paid events", num: true },
      { key: "revenue", label: `paid (${viewer.revenue.currency})`, num: true, sort: (s) => s.revenue.total, cell: (s) => D.moneyCell(s.revenue) },
      { key: "last_at", label: "date", cell: (s) => D.day(s.last_at) },
    ], viewer.streams, state.streamSort, render);
    D.table($("viewer-payments"), [
      { key: "time", label: "when", cell: (p) => `${D.day(p.time)} ${D.clock(p.time)}` },
      { key: "stream_id", label: "stream", sort: (p) => titles.get(p.stream_id) || p.stream_id, cell: (p) => titles.get(p.stream_id) || p.stream_id },
      { key: "kind", label: "kind", cell: (p) => D.kindLabel(p.kind) },
      { key: "amount", label: "amount", num: true, cell: (p) => D.paidText(p) },
    ], viewer.payments, state.paymentSort, render);
    $("payments-empty").hidden = viewer.payments.length > 0;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
  }

  async function refresh() {
    if (!viewerId) {
      D.setBanner("Give ?viewer=<viewer id> (open a viewer from the overview or a stream's leaderboard).");
      return;
    }
    try {
      state.last = await api("/api/viewer-history", { viewer: viewerId });
      D.setBanner(null);
    } catch (error) {
      D.setBanner(error.status === 404 ? `No viewer ${viewerId} in any stream.` : `Cannot load this viewer: ${error.message}`);
      return;
    }
    render();
  }

  refresh();
  window.setInterval(refresh, 5000);
})();
