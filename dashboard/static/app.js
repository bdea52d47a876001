// donorcast dashboard. Plain JS, no build step, nothing fetched from outside this server.
//
// Everything the server sends (chat text, names, ids, amounts) is data: it only ever reaches the page
// through textContent / createTextNode / setAttribute on SVG geometry, never innerHTML. The server's
// Content-Security-Policy forbids inline and foreign scripts on top of that.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const CHANGE_SHOWN_MS = 15000;
  const DRILL_REFRESH_MS = 3000;
  const STREAMS_REFRESH_MS = 10000;

  const state = {
    stream: null,
    k: 20,
    token: null,
    source: null,
    streamsKey: "",
    prevRanks: new Map(),
    changes: new Map(),
    drillViewer: null,
    drillAt: 0,
    last: null,
    problems: { feed: null, streams: null },
  };

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ tiny DOM helpers (text only)

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function svgTitle(node, text) {
    const title = document.createElementNS(SVG, "title");
    title.textContent = text;
    node.appendChild(title);
    return node;
  }

  // ------------------------------------------------------------ formatting

  function percent(p) {
    return p === null || p === undefined ? "—" : `${(p * 100).toFixed(1)}%`;
  }

  function money(amount, currency, text) {
    if (amount === null || amount === undefined) return text || "";
    if (!currency || currency === "XXX") return text || amount.toFixed(2);
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(amount);
    } catch (_) {
      return `${amount.toFixed(2)} ${currency}`;
    }
  }

  function clock(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso)
      : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function sinceStart(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return `+${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
  }

  function kindLabel(kind) {
    return {
      paid_message: "Super Chat", paid_sticker: "Super Sticker", membership_new: "membership",
      membership_gift: "gifted memberships", bits: "bits", subscription: "sub",
      gift_subscription: "gifted subs", donation: "donation",
    }[kind] || kind;
  }

  function displayName(name, id) {
    return name || (id && id.startsWith("name:") ? id.slice(5) : id) || "?";
  }

  // ------------------------------------------------------------ API

  async function api(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(params || {})) url.searchParams.set(key, String(value));
    const headers = state.token ? { "X-Donorcast-Token": state.token } : {};
    const response = await fetch(url, { headers, credentials: "same-origin", cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.error || (body.problems || []).join("; ") || response.statusText);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) search.set(key, String(value));
    return search.toString();
  }

  // ------------------------------------------------------------ banner and connection state

  // One banner, two possible sources: the live feed's degraded state wins over a failed stream list.
  function setProblem(source, text) {
    state.problems[source] = text;
    const banner = $("banner");
    const shown = state.problems.feed || state.problems.streams;
    banner.textContent = shown || "";
    banner.hidden = !shown;
  }

  function tidy(text) {
    return String(text).replace(/[.\s]+$/, "");
  }

  function setConnection(kind, text) {
    const pill = $("connection");
    pill.className = `pill pill-${kind}`;
    pill.textContent = text;
  }

  // ------------------------------------------------------------ stream picker

  async function loadStreams() {
    let streams;
    try {
      streams = await api("/api/streams", { limit: 200 });
    } catch (error) {
      setProblem("streams", `Cannot list streams: ${tidy(error.message)}. Retrying…`);
      if (state.stream && !$("stream-picker").options.length) {
        renderPicker([{ stream_id: state.stream, title: "", state: "waiting" }]);
      }
      return;
    }
    setProblem("streams", null);
    const key = JSON.stringify(streams.map((s) => [s.stream_id, s.state, s.title]));
    if (state.stream && !streams.some((s) => s.stream_id === state.stream)) {
      streams.unshift({ stream_id: state.stream, title: "", state: "waiting" });
    }
    if (key !== state.streamsKey || !$("stream-picker").options.length) {
      state.streamsKey = key;
      renderPicker(streams);
    }
    if (!state.stream && streams.length) selectStream(streams[0].stream_id);
  }

  function renderPicker(streams) {
    const picker = $("stream-picker");
    const groups = [
      ["Live and replaying", streams.filter((s) => s.state !== "ended")],
      ["Ended", streams.filter((s) => s.state === "ended")],
    ];
    picker.replaceChildren();
    for (const [label, items] of groups) {
      if (!items.length) continue;
      const group = document.createElement("optgroup");
      group.label = label;
      for (const stream of items) {
        const option = document.createElement("option");
        option.value = stream.stream_id;
        option.textContent = `${stream.title || stream.stream_id} · ${stream.state}`;
        group.appendChild(option);
      }
      picker.appendChild(group);
    }
    if (state.stream) picker.value = state.stream;
  }

  function selectStream(streamId) {
    state.stream = streamId;
    state.prevRanks = new Map();
    state.changes = new Map();
    state.last = null;
    $("stream-picker").value = streamId;
    $("stream-title").textContent = streamId;
    closeDrill();
    updateLocation();
    updateExports();
    connect();
  }

  function updateLocation() {
    const url = new URL(window.location.href);
    url.searchParams.delete("token");
    if (state.stream) url.searchParams.set("stream", state.stream);
    url.searchParams.set("k", String(state.k));
    window.history.replaceState(null, "", url);
  }

  function updateExports() {
    const params = query({ stream: state.stream || "", k: state.k });
    for (const [id, path] of [
      ["export-leaderboard-csv", "/api/export/leaderboard.csv"],
      ["export-leaderboard-json", "/api/export/leaderboard.json"],
      ["export-summary-csv", "/api/export/summary.csv"],
      ["export-summary-json", "/api/export/summary.json"],
    ]) {
      $(id).setAttribute("href", `${path}?${params}`);
    }
  }

  // ------------------------------------------------------------ live feed (Server-Sent Events)

  function connect() {
    if (state.source) state.source.close();
    if (!state.stream) return;
    setConnection("wait", "connecting…");
    const source = new EventSource(`/api/events?${query({ stream: state.stream, k: state.k })}`);
    state.source = source;
    source.addEventListener("snapshot", (event) => {
      if (source !== state.source) return;
      let snapshot;
      try {
        snapshot = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      render(snapshot);
    });
    source.addEventListener("error", () => {
      if (source === state.source) setConnection("wait", "reconnecting…");
    });
  }

  function render(snapshot) {
    if (snapshot.status !== "ok") {
      setConnection("bad", "degraded");
      const why = tidy((snapshot.problems || []).join("; ")) || "data source unavailable";
      setProblem("feed", `Degraded: ${why}. Showing the last data received; retrying every second.`);
      return;
    }
    setProblem("feed", null);
    setConnection("ok", "live");
    state.last = snapshot;
    renderSummary(snapshot.summary || {}, snapshot);
    renderBoard(snapshot.leaderboard || []);
    renderPaid(snapshot.paid || []);
    renderActivity(snapshot.activity || []);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    if (state.drillViewer && Date.now() - state.drillAt > DRILL_REFRESH_MS) refreshDrill();
  }

  // ------------------------------------------------------------ summary tiles

  function renderSummary(summary, snapshot) {
    $("stream-title").textContent = summary.title || snapshot.stream_id || "";
    const pill = $("stream-state");
    pill.textContent = summary.state || "";
    pill.className = `pill pill-${summary.state === "ended" ? "wait" : "ok"}`;
    const totals = Object.entries(summary.paid_totals || {})
      .map(([currency, amount]) => money(amount, currency, `${amount} ${currency}`)).join(" + ");
    const k = snapshot.k;
    const tiles = [
      ["messages", summary.messages],
      ["viewers", summary.viewers],
      ["scored viewers", summary.scored_viewers],
      ["paid events", summary.paid_events],
      ["payers", summary.payers],
      ["paid total", totals || "—"],
      [`precision@${k}`, percent(summary.precision_at_k)],
      [`hit rate@${k}`, percent(summary.hit_rate_at_k)],
      ["model", snapshot.model_version || Object.keys(summary.model_versions || {})[0] || "—"],
    ];
    const fragment = document.createDocumentFragment();
    for (const [label, value] of tiles) {
      const tile = el("div", label === "model" ? "tile small" : "tile", el("dt", null, label), el("dd", null, value ?? "—"));
      fragment.appendChild(tile);
    }
    $("tiles").replaceChildren(fragment);
  }

  // ------------------------------------------------------------ leaderboard

  function sparkline(values, width, height) {
    const box = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "spark" });
    if (!values || values.length < 2) {
      if (values && values.length === 1) box.appendChild(svg("circle", { cx: width - 3, cy: height / 2, r: 2 }));
      return box;
    }
    let low = Math.min(...values), high = Math.max(...values);
    if (high - low < 0.05) {
      const middle = (high + low) / 2;
      low = Math.max(0, middle - 0.025);
      high = low + 0.05;
    }
    const x = (i) => 2 + (i * (width - 4)) / (values.length - 1);
    const y = (v) => height - 2 - ((v - low) / (high - low)) * (height - 4);
    const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    box.appendChild(svg("polyline", { points, fill: "none", class: "spark-line" }));
    const last = values.length - 1;
    box.appendChild(svg("circle", { cx: x(last).toFixed(1), cy: y(values[last]).toFixed(1), r: 2, class: "spark-dot" }));
    return svgTitle(box, `last ${values.length} scores: ${values.map((v) => percent(v)).join(" → ")}`);
  }

  function changeCell(row, now) {
    const prev = state.prevRanks.get(row.viewer_id);
    if (state.prevRanks.size && prev !== row.rank) {
      state.changes.set(row.viewer_id, { from: prev, at: now });
    }
    const change = state.changes.get(row.viewer_id);
    if (!change || now - change.at > CHANGE_SHOWN_MS) return el("span", "change change-none", "·");
    if (change.from === undefined) return el("span", "change change-new", "new");
    const delta = change.from - row.rank;
    if (delta === 0) return el("span", "change change-none", "·");
    return el("span", delta > 0 ? "change change-up" : "change change-down",
      `${delta > 0 ? "▲" : "▼"}${Math.abs(delta)}`);
  }

  function donatedCell(row, k) {
    if (!row.paid_events) return el("span", "muted", "—");
    const amounts = (row.paid || []).map((p) => money(p.amount, p.currency, p.amount_text || kindLabel(p.kind)));
    const cell = el("span", "donated", el("span", "coin", "$"), ` ${amounts.join(", ")}`);
    cell.appendChild(document.createTextNode(" "));
    cell.appendChild(hitTag(row.rank_before_paid, row.hit, k));
    return cell;
  }

  function hitTag(rankBefore, hit, k) {
    const before = rankBefore === null || rankBefore === undefined ? "no score yet" : `was #${rankBefore}`;
    const tag = el("span", hit ? "tag tag-hit" : "tag tag-miss", hit ? "hit" : "miss");
    tag.title = `${before} just before paying (top ${k} counts as a hit)`;
    return el("span", "hit-wrap", tag, el("small", "muted", ` ${before}`));
  }

  function renderBoard(rows) {
    const now = Date.now();
    const fragment = document.createDocumentFragment();
    for (const row of rows) {
      const tr = el("tr", row.paid_events ? "row donor" : "row");
      tr.dataset.viewer = row.viewer_id;
      tr.tabIndex = 0;
      const bar = el("span", "bar");
      bar.style.width = `${Math.round(Math.max(0, Math.min(1, row.probability)) * 100)}%`;
      tr.append(
        el("td", "num rank", row.rank),
        el("td", null, changeCell(row, now)),
        el("td", "viewer", el("span", "viewer-name", displayName(row.viewer_name, row.viewer_id))),
        el("td", "likelihood", el("span", "bar-track", bar), el("span", "num", percent(row.probability))),
        el("td", null, sparkline(row.trend || [], 110, 26)),
        el("td", "num", row.n_messages),
        el("td", null, donatedCell(row, state.k)),
      );
      tr.addEventListener("click", () => openDrill(row.viewer_id));
      tr.addEventListener("keydown", (event) => { if (event.key === "Enter") openDrill(row.viewer_id); });
      fragment.appendChild(tr);
    }
    state.prevRanks = new Map(rows.map((row) => [row.viewer_id, row.rank]));
    for (const [viewer, change] of state.changes) {
      if (now - change.at > CHANGE_SHOWN_MS) state.changes.delete(viewer);
    }
    $("leaderboard").tBodies[0].replaceChildren(fragment);
    $("board-empty").hidden = rows.length > 0;
  }

  // ------------------------------------------------------------ paid events

  function renderPaid(events) {
    const fragment = document.createDocumentFragment();
    for (const event of events) {
      const item = el("li", event.hit ? "paid-item hit" : "paid-item miss",
        el("span", "paid-time", clock(event.time)),
        el("span", "paid-amount", money(event.amount, event.currency, event.amount_text || "")),
        el("span", "paid-kind", kindLabel(event.kind)),
        el("span", "paid-viewer", displayName(event.viewer_name, event.viewer_id)),
        hitTag(event.rank_before, event.hit, state.k));
      item.dataset.viewer = event.viewer_id;
      item.addEventListener("click", () => openDrill(event.viewer_id));
      fragment.appendChild(item);
    }
    $("paid-events").replaceChildren(fragment);
    $("paid-empty").hidden = events.length > 0;
  }

  // ------------------------------------------------------------ activity chart

  function renderActivity(minutes) {
    const holder = $("activity-chart");
    const width = Math.max(320, holder.clientWidth || 600), height = 170;
    const pad = { left: 36, right: 30, top: 10, bottom: 22 };
    const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "activity-svg" });
    if (!minutes.length) {
      const text = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" });
      text.textContent = "no chat yet";
      chart.appendChild(text);
      holder.replaceChildren(chart);
      return;
    }
    const maxMessages = Math.max(1, ...minutes.map((m) => m.messages));
    const maxPaid = Math.max(1, ...minutes.map((m) => m.paid));
    const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
    const step = plotW / minutes.length;
    minutes.forEach((m, i) => {
      const h = (m.messages / maxMessages) * plotH;
      const bar = svg("rect", {
        x: (pad.left + i * step + step * 0.1).toFixed(1), y: (pad.top + plotH - h).toFixed(1),
        width: Math.max(1, step * 0.8).toFixed(1), height: h.toFixed(1), class: "bar-messages",
      });
      svgTitle(bar, `${clock(m.minute)}: ${m.messages} messages, ${m.paid} paid`);
      chart.appendChild(bar);
      if (m.paid > 0) {
        const dot = svg("circle", {
          cx: (pad.left + i * step + step / 2).toFixed(1),
          cy: (pad.top + plotH - (m.paid / maxPaid) * plotH).toFixed(1), r: 3.5, class: "dot-paid",
        });
        svgTitle(dot, `${clock(m.minute)}: ${m.paid} paid events`);
        chart.appendChild(dot);
      }
    });
    chart.appendChild(svg("line", { x1: pad.left, y1: pad.top + plotH, x2: width - pad.right, y2: pad.top + plotH, class: "axis-line" }));
    const labels = [
      [pad.left - 4, pad.top + 8, "end", String(maxMessages)],
      [pad.left - 4, pad.top + plotH, "end", "0"],
      [width - pad.right + 4, pad.top + 8, "start", String(maxPaid)],
      [pad.left, height - 6, "start", clock(minutes[0].minute).slice(0, 5)],
      [width - pad.right, height - 6, "end", clock(minutes[minutes.length - 1].minute).slice(0, 5)],
    ];
    for (const [x, y, anchor, value] of labels) {
      const text = svg("text", { x, y, "text-anchor": anchor, class: "axis" });
      text.textContent = value;
      chart.appendChild(text);
    }
    holder.replaceChildren(chart);
  }

  // ------------------------------------------------------------ drill-down

  async function openDrill(viewerId) {
    state.drillViewer = viewerId;
    $("drilldown").hidden = false;
    $("drill-name").textContent = displayName(null, viewerId);
    $("drill-meta").textContent = "loading…";
    $("drill-messages").replaceChildren();
    await refreshDrill();
  }

  function closeDrill() {
    state.drillViewer = null;
    $("drilldown").hidden = true;
  }

  async function refreshDrill() {
    const viewerId = state.drillViewer;
    if (!viewerId || !state.stream) return;
    state.drillAt = Date.now();
    let viewer;
    try {
      viewer = await api("/api/viewer", { stream: state.stream, viewer: viewerId });
    } catch (error) {
      if (state.drillViewer === viewerId) $("drill-meta").textContent = `Cannot load this viewer: ${error.message}`;
      return;
    }
    if (state.drillViewer !== viewerId) return;
    renderDrill(viewer);
  }

  function renderDrill(viewer) {
    $("drill-name").textContent = displayName(viewer.viewer_name, viewer.viewer_id);
    const score = viewer.score;
    const parts = [viewer.viewer_id];
    if (score) {
      parts.push(`rank #${viewer.rank}`, `likelihood ${percent(score.probability)}`,
        `${score.n_messages} messages scored`, `model ${score.model_version}`);
    } else {
      parts.push("not scored yet");
    }
    $("drill-meta").textContent = parts.join(" · ");
    $("drill-history").replaceChildren(sparkline((viewer.history || []).map((h) => h.probability), 420, 60));
    const fragment = document.createDocumentFragment();
    for (const message of viewer.messages || []) {
      const classes = ["message"];
      if (message.moved_score) classes.push("moved");
      if (message.paid) classes.push("paid");
      const item = el("li", classes.join(" "),
        el("span", "message-time", clock(message.time)),
        el("span", "message-offset muted", sinceStart(message.offset_seconds)));
      if (message.moved_score) {
        const star = el("span", "tag tag-moved", "★ moved the score");
        item.appendChild(star);
      }
      if (message.paid) {
        item.appendChild(el("span", "tag tag-paid", el("span", "coin", "$"),
          ` paid ${money(message.amount, message.currency, message.amount_text || "")} ${kindLabel(message.kind)}`));
      }
      item.appendChild(el("span", "message-text", message.text));
      if (message.truncated) item.appendChild(el("small", "muted", " (truncated)"));
      fragment.appendChild(item);
    }
    $("drill-messages").replaceChildren(fragment);
  }

  // ------------------------------------------------------------ start

  function start() {
    const params = new URLSearchParams(window.location.search);
    state.token = params.get("token");
    const k = Number.parseInt(params.get("k") || "20", 10);
    state.k = [10, 20, 50, 100].includes(k) ? k : 20;
    $("k-picker").value = String(state.k);
    $("stream-picker").addEventListener("change", (event) => selectStream(event.target.value));
    $("k-picker").addEventListener("change", (event) => {
      state.k = Number.parseInt(event.target.value, 10);
      state.prevRanks = new Map();
      updateLocation();
      updateExports();
      connect();
    });
    $("drill-close").addEventListener("click", closeDrill);
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDrill(); });
    window.addEventListener("resize", () => { if (state.last) renderActivity(state.last.activity || []); });
    const wanted = params.get("stream");
    if (wanted) selectStream(wanted);
    else updateLocation();
    loadStreams();
    window.setInterval(loadStreams, STREAMS_REFRESH_MS);
    window.setInterval(() => { if (!state.stream) loadStreams(); }, 2000);
  }

  start();
})();
