// donorcast dashboard, the stream page: one stream's live leaderboard, money, charts and drill-down.
// Shared helpers (text-only DOM, API, formatting, uPlot charts) are in common.js.
"use strict";

(() => {
  const D = window.donorcast;
  const { $, el, percent, money, clock, kindLabel, displayName, api, query } = D;
  const SVG = "http://www.w3.org/2000/svg";
  const CHANGE_SHOWN_MS = 15000;
  const DRILL_REFRESH_MS = 3000;
  const STREAMS_REFRESH_MS = 10000;

  const state = {
    stream: null,
    k: 20,
    token: D.token,
    source: null,
    streamsKey: "",
    prevRanks: new Map(),
    changes: new Map(),
    drillViewer: null,
    drillAt: 0,
    last: null,
    problems: { feed: null, streams: null },
    donorSort: { key: "total", dir: -1 },
  };

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

  function sinceStart(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return `+${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
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
        option.textContent = `${stream.display_title || stream.title || stream.stream_id} · ${stream.state}`;
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
    if (state.drillViewer) url.searchParams.set("viewer", state.drillViewer);
    else url.searchParams.delete("viewer");
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
    const summary = snapshot.summary || {};
    renderSummary(summary, snapshot);
    renderBoard(snapshot.leaderboard || [], summary.base_rate);
    renderPaid(snapshot.paid || []);
    renderActivity(snapshot.activity || []);
    renderRevenue(summary);
    if (snapshot.what_is_this) $("what-is-this").textContent = snapshot.what_is_this;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    if (state.drillViewer && Date.now() - state.drillAt > DRILL_REFRESH_MS) refreshDrill();
  }

  // ------------------------------------------------------------ summary tiles

  function baseRateText(base) {
    if (!base || base.value === null || base.value === undefined) return "—";
    return `${percent(base.value)} (${base.text})`;
  }

  function modelName(snapshot, summary) {
    // The serving worker's model and its encoder tier; a read-only dashboard knows only the versions scored.
    const version = snapshot.model_version || Object.keys(summary.model_versions || {})[0];
    if (!version) return "—";
    return snapshot.model_tier ? `${version} · ${snapshot.model_tier} encoder` : version;
  }

  function renderSummary(summary, snapshot) {
    $("stream-title").textContent = summary.display_title || summary.title || snapshot.stream_id || "";
    const pill = $("stream-state");
    pill.textContent = summary.state || "";
    pill.className = `pill pill-${summary.state === "ended" ? "wait" : "ok"}`;
    const k = snapshot.k;
    const base = summary.base_rate;
    const tiles = [
      ["messages", summary.messages],
      ["viewers", summary.viewers],
      ["scored viewers", summary.scored_viewers],
      ["payers", summary.payers],
      ["base rate", base && base.value !== null ? percent(base.value) : "—", base ? base.text : ""],
      ["revenue", D.moneyCell(summary.revenue)],
      ["paid events", summary.paid_events],
      ["counts", D.countsText(summary.paid_counts) || "—", "bits, memberships and gifts are counted, not money"],
      [`precision@${k}`, percent(summary.precision_at_k)],
      [`hit rate@${k}`, percent(summary.hit_rate_at_k)],
      ["model", modelName(snapshot, summary)],
    ];
    const fragment = document.createDocumentFragment();
    for (const [label, value, hint] of tiles) {
      const tile = el("div", ["model", "counts"].includes(label) ? "tile small" : "tile",
        el("dt", null, label), el("dd", null, value ?? "—"));
      tile.dataset.tile = label.replace(/@.*/, "");
      if (hint) tile.title = hint;
      fragment.appendChild(tile);
    }
    $("tiles").replaceChildren(fragment);
    $("base-rate").textContent = base && base.value !== null && base.value !== undefined
      ? `Base rate ${baseRateText(base)}${base.source === "observed" ? "" : ""}.` : "";
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
    const cell = el("span", "donated", el("span", "coin", "$"), " ");
    (row.paid || []).forEach((p, i) => {
      if (i) cell.appendChild(document.createTextNode(", "));
      cell.appendChild(D.paidNode(p));
    });
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

  function renderBoard(rows, base) {
    const now = Date.now();
    $("chance-head").textContent = base && base.value !== null && base.value !== undefined
      ? `chance to pay (base ${percent(base.value)})` : "chance to pay";
    const fragment = document.createDocumentFragment();
    for (const row of rows) {
      const tr = el("tr", row.paid_events ? "row donor" : "row");
      tr.dataset.viewer = row.viewer_id;
      tr.tabIndex = 0;
      const bar = el("span", "bar");
      bar.style.width = `${Math.round(Math.max(0, Math.min(1, row.probability)) * 100)}%`;
      const chance = el("td", "likelihood", el("span", "bar-track", bar), el("span", "num chance", percent(row.probability)));
      chance.title = `${percent(row.probability)} chance to pay in this stream; base rate ${baseRateText(base)}`;
      const msgs = el("td", "num msgs", row.low_confidence ? D.lowConfidence(row.n_messages) : row.n_messages);
      tr.append(
        el("td", "num rank", row.rank),
        el("td", null, changeCell(row, now)),
        el("td", "viewer", el("span", "viewer-name", displayName(row.viewer_name, row.viewer_id))),
        el("td", "num lift", D.lift(row.lift)),
        chance,
        el("td", "trend-cell", sparkline(row.trend || [], 90, 24)),
        msgs,
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
        el("span", "paid-amount", D.paidNode(event)),
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
    const data = [minutes.map((m) => m.stream_minute), minutes.map((m) => m.messages), minutes.map((m) => m.paid)];
    D.chart(holder, {
      xLabel: "minutes since stream start",
      series: [
        { label: "messages / min", stroke: "#5b84d6", fill: "rgba(157, 184, 238, 0.7)", bars: true },
        { label: "paid events / min", stroke: "#d2413a", scale: "paid", points: true },
      ],
      axes: [{ scale: "y", label: "messages / min" }, { scale: "paid", label: "paid events / min", side: 1 }],
    }, data);
  }

  function renderRevenue(summary) {
    const points = summary.revenue_curve || [];
    const currency = (summary.revenue || {}).currency || "USD";
    const data = [points.map((p) => p[0]), points.map((p) => p[1])];
    D.chart($("revenue-chart"), {
      xLabel: "minutes since stream start",
      series: [{ label: `revenue (${currency})`, stroke: "#b7791f", fill: "rgba(242, 193, 78, 0.25)", stepped: true,
        value: (u, v) => (v === null || v === undefined ? "—" : money(v, currency)) }],
      axes: [{ scale: "y", label: `revenue, ${currency}` }],
    }, data);
    $("revenue-empty").hidden = points.length > 0;
    const donors = summary.top_donors || [];
    D.table($("top-donors"), [
      { key: "rank", label: "#", num: true },
      { key: "viewer_name", label: "viewer", cell: (d) => el("span", "viewer-name", displayName(d.viewer_name, d.viewer_id)) },
      { key: "total", label: `total (${currency})`, num: true, cell: (d) => D.moneyCell({ total: d.total, currency, by_currency: d.by_currency }) },
      { key: "events", label: "payments", num: true },
    ], donors, state.donorSort, () => renderRevenue(summary), (tr, donor) => {
      tr.className = "row";
      tr.dataset.viewer = donor.viewer_id;
      tr.addEventListener("click", () => openDrill(donor.viewer_id));
    });
    $("donors-empty").hidden = donors.length > 0;
  }

  // ------------------------------------------------------------ drill-down

  async function openDrill(viewerId) {
    state.drillViewer = viewerId;
    updateLocation();
    $("drilldown").hidden = false;
    $("drill-name").textContent = displayName(null, viewerId);
    $("drill-meta").textContent = "loading…";
    $("drill-messages").replaceChildren();
    await refreshDrill();
  }

  function closeDrill() {
    state.drillViewer = null;
    $("drilldown").hidden = true;
    updateLocation();
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
    const base = state.last && state.last.summary ? state.last.summary.base_rate : null;
    if (score) {
      parts.push(`rank #${viewer.rank}`, `${percent(score.probability)} chance to pay in this stream`,
        `base rate ${baseRateText(base)}`,
        base && base.value ? `lift ${D.lift(score.probability / base.value)}` : null,
        `${score.n_messages} messages scored${viewer.low_confidence ? ", low confidence" : ""}`,
        `model ${score.model_version}`);
    } else {
      parts.push("not scored yet");
    }
    $("drill-meta").textContent = parts.filter(Boolean).join(" · ");
    $("drill-profile").setAttribute("href", `/dashboard/viewer?${query({ viewer: viewer.viewer_id })}`);
    const explanation = viewer.explanation || {};
    const explained = $("drill-explanation");
    explained.textContent = explanation.message_ids && explanation.message_ids.length
      ? `★ ${explanation.message_ids.length} message(s) moved the score most: ${explanation.reason}.`
      : `No explanation: ${explanation.reason || "none available"}.`;
    explained.dataset.source = explanation.source || "none";
    const history = viewer.history || [];
    $("drill-history").replaceChildren(sparkline(history.map((h) => h.probability), 420, 60));
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
          ` paid ${D.paidText(message)} ${kindLabel(message.kind)}`));
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
    window.addEventListener("resize", () => {
      if (!state.last) return;
      renderActivity(state.last.activity || []);
      renderRevenue(state.last.summary || {});
    });
    const wanted = params.get("stream");
    if (wanted) selectStream(wanted);
    if (wanted && params.get("viewer")) openDrill(params.get("viewer"));
    else updateLocation();
    loadStreams();
    window.setInterval(loadStreams, STREAMS_REFRESH_MS);
    window.setInterval(() => { if (!state.stream) loadStreams(); }, 2000);
  }

  start();
})();
