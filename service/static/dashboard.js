// Job dashboard: polls the JSON API and redraws the page. Plain browser JavaScript,
// no build step, no third-party code, no requests to any other origin.
//
// Every string that comes from the API goes into the page through textContent or
// setAttribute, never through HTML parsing, so job fields cannot inject markup.
"use strict";

(function () {
  const POLL_MS = 2000;
  const RECENT_LIMIT = 20;
  const RUNNING_LIMIT = 50;
  const STATS_MINUTES = 60;
  const STALE_HEARTBEAT_S = 30; // a worker silent this long is shown as stale
  const SVG_NS = "http://www.w3.org/2000/svg";
  const CHART = { width: 600, height: 200, left: 44, right: 10, top: 12, bottom: 24 };

  // ---------------------------------------------------------------- API access

  // The API lives next to the page: /prefix/dashboard reads /prefix/v1/... . Taking the
  // root from the page's own path keeps the dashboard working behind a reverse-proxy prefix.
  const apiRoot = window.location.pathname.replace(/dashboard\/?$/, "");
  const apiKey = new URLSearchParams(window.location.search).get("key");
  // The live page (a face speaking from the microphone) takes the key the same way.
  if (apiKey) document.getElementById("live-link").href = "live?key=" + encodeURIComponent(apiKey);

  // Difference between the server's clock and ours, from the Date header, so that
  // heartbeat ages are right even when the browser's clock is off.
  let serverOffsetMs = 0;

  function serverNow() {
    return Date.now() + serverOffsetMs;
  }

  async function getJson(path) {
    const headers = { Accept: "application/json" };
    if (apiKey) headers.Authorization = "Bearer " + apiKey;
    const response = await fetch(apiRoot + path, { headers: headers, cache: "no-store" });
    noteServerDate(response.headers.get("Date"));
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  function noteServerDate(header) {
    const server = header ? Date.parse(header) : NaN;
    // The header has whole seconds only: ignore differences that small.
    if (!Number.isNaN(server) && Math.abs(server - Date.now()) > 2000) {
      serverOffsetMs = server - Date.now();
    }
  }

  // The API answers errors as {"error": {"code", "message"}}; fall back to the HTTP status.
  async function errorText(response) {
    let text = "HTTP " + response.status;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) text += " " + body.error.message;
    } catch (ignored) {
      // Not JSON (a proxy's error page, say): the status is all there is.
    }
    if (response.status === 401 || response.status === 403) {
      text += " (open the dashboard as dashboard?key=<API key>)";
    }
    return text;
  }

  // ---------------------------------------------------------------- small helpers

  // Builds an element; attrs are set with setAttribute, string children become text nodes.
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    return fill(node, attrs, children);
  }

  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    return fill(node, attrs, children);
  }

  function fill(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of [].concat(children === undefined ? [] : children)) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
    }
    return node;
  }

  // Server timestamps are UTC. A timestamp without an offset (SQLite drops it) is read
  // as UTC too, and fractions finer than milliseconds are cut because Date.parse does
  // not promise to accept them.
  function parseTime(text) {
    if (!text) return NaN;
    let iso = String(text).trim().replace(" ", "T").replace(/(\.\d{3})\d+/, "$1");
    if (!/(Z|[+-]\d{2}:?\d{2})$/i.test(iso)) iso += "Z";
    return Date.parse(iso);
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function clockTime(ms) {
    const d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  // Today's times as HH:MM:SS, older ones with their date.
  function formatTime(text) {
    const ms = parseTime(text);
    if (Number.isNaN(ms)) return "–";
    const d = new Date(ms);
    const today = new Date(serverNow()).toDateString() === d.toDateString();
    if (today) return clockTime(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
    const s = Math.round(seconds);
    if (s < 3600) return Math.floor(s / 60) + " m " + pad(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + pad(Math.floor((s % 3600) / 60)) + " m";
  }

  // A finished job's run time; a running job's time so far; nothing for a queued one.
  function jobSeconds(job) {
    const start = parseTime(job.started_at || job.created_at);
    const end = job.finished_at ? parseTime(job.finished_at) : NaN;
    if (!Number.isNaN(end)) return Math.max(0, (end - start) / 1000);
    if (job.status === "running" && job.started_at) return Math.max(0, (serverNow() - start) / 1000);
    return null;
  }

  function percent(progress) {
    const p = Number(progress);
    return Number.isFinite(p) ? Math.max(0, Math.min(100, Math.round(p * 100))) : 0;
  }

  // Only http(s) and same-origin paths become links: a "javascript:" URL never does.
  function safeHref(url) {
    if (!url) return null;
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (ignored) {
      return null;
    }
  }

  function badge(status, title) {
    const known = ["queued", "running", "succeeded", "failed", "canceled", "idle", "busy", "stale", "ready",
      "missing"];
    const kind = known.includes(status) ? status : "unknown";
    return el("span", { class: "badge badge-" + kind, title: title }, String(status));
  }

  function emptyRow(columns, text) {
    return el("tr", { class: "empty-row" }, el("td", { colspan: columns }, text));
  }

  // ---------------------------------------------------------------- sections

  function renderCounts(stats) {
    document.getElementById("queued-count").textContent = String(stats.queued ?? "–");
    document.getElementById("running-count").textContent = String(stats.running ?? "–");
    document.getElementById("worker-count").textContent = String(stats.workers ?? "–");
  }

  function renderRunning(list) {
    const jobs = list.data || [];
    const box = document.getElementById("running-jobs");
    document.getElementById("running-note").textContent =
      list.has_more ? "showing the first " + jobs.length : "";
    if (jobs.length === 0) {
      box.replaceChildren(el("p", { class: "empty" }, "Nothing is running."));
      return;
    }
    box.replaceChildren(...jobs.map(runningItem));
  }

  function runningItem(job) {
    const pct = percent(job.progress);
    const bar = el("div", {
      class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": pct, "data-progress": pct, "aria-label": "Progress of " + job.id,
    }, el("div", { class: "progress-fill" }));
    // Set through the CSSOM, which a style-src 'self' policy allows (a style attribute it would not).
    bar.firstChild.style.width = pct + "%";
    const attempts = "attempt " + (job.attempts ?? "?") + (job.max_attempts ? "/" + job.max_attempts : "");
    return el("div", { class: "running-item", "data-job-id": job.id }, [
      el("div", { class: "running-head" }, [
        el("code", {}, job.id),
        el("span", { class: "muted" }, job.model || ""),
        el("span", { class: "muted" }, attempts),
        el("span", { class: "muted" }, "started " + formatTime(job.started_at)),
        job.worker_id ? el("span", { class: "muted" }, "on " + job.worker_id) : null,
      ]),
      el("div", { class: "progress-row" }, [bar, el("span", { class: "progress-label" }, pct + " %")]),
    ]);
  }

  function renderRecent(list) {
    // The API lists newest first already; sorting again keeps the table right regardless.
    const jobs = (list.data || []).slice()
      .sort((a, b) => (parseTime(b.created_at) || 0) - (parseTime(a.created_at) || 0))
      .slice(0, RECENT_LIMIT);
    const body = document.querySelector("#recent-jobs tbody");
    if (jobs.length === 0) {
      body.replaceChildren(emptyRow(6, "No jobs yet."));
      return;
    }
    body.replaceChildren(...jobs.map(recentRow));
  }

  function recentRow(job) {
    // The error code sits beside the badge; the full message shows on hover.
    const error = job.error ? job.error.code + ": " + job.error.message : null;
    const code = job.error ? el("span", { class: "error-code" }, job.error.code) : null;
    return el("tr", { "data-job-id": job.id, "data-status": job.status }, [
      el("td", {}, el("code", {}, job.id)),
      el("td", {}, job.model || ""),
      el("td", {}, [badge(job.status, error), code]),
      el("td", {}, formatTime(job.created_at)),
      el("td", { class: "num" }, formatSeconds(jobSeconds(job))),
      el("td", {}, resultCell(job)),
    ]);
  }

  function resultCell(job) {
    const href = job.status === "succeeded" ? safeHref(job.result_url) : null;
    if (!href) return "";
    return el("a", { href: href, target: "_blank", rel: "noopener noreferrer" }, RESULT_NAMES[job.task] || "result");
  }

  // What a succeeded job's result link says, by task.
  const RESULT_NAMES = {
    "talking-face": "video",
    "pose-transfer": "image",
    "motion-transfer": "video",
    "motion-target": "target",
    "image-generation": "images",
  };

  function renderWorkers(list) {
    const workers = list.data || [];
    const body = document.querySelector("#workers tbody");
    if (workers.length === 0) {
      body.replaceChildren(emptyRow(8, "No worker is connected (start one with: talkingface worker)."));
      return;
    }
    body.replaceChildren(...workers.map(workerRow));
  }

  function workerRow(worker) {
    const beat = parseTime(worker.heartbeat_at);
    const age = Number.isNaN(beat) ? null : Math.max(0, (serverNow() - beat) / 1000);
    const stale = age === null || age > STALE_HEARTBEAT_S;
    const status = [badge(worker.status)];
    if (stale) status.push(" ", badge("stale", "no heartbeat for " + formatSeconds(age)));
    const attrs = { "data-worker-id": worker.id, "data-status": worker.status };
    if (stale) attrs.class = "stale";
    return el("tr", attrs, [
      el("td", {}, el("code", {}, worker.id)),
      el("td", { class: "num" }, String(worker.pid ?? "")),
      el("td", {}, worker.hostname || ""),
      el("td", {}, worker.device || ""),
      el("td", {}, (worker.models || []).join(", ")),
      el("td", {}, status),
      el("td", {}, worker.current_job ? el("code", {}, worker.current_job) : "–"),
      el("td", { class: "num" }, age === null ? "–" : formatSeconds(age) + " ago"),
    ]);
  }

  // ---------------------------------------------------------------- models

  // One row a model, from its declaration in /v1/models: a model added to the service
  // shows up here with its inputs and options, with no change to this page.
  function renderModels(list) {
    const models = Array.isArray(list.data) ? list.data : [];
    const body = document.querySelector("#models tbody");
    if (models.length === 0) {
      body.replaceChildren(emptyRow(6, "No models."));
      return;
    }
    body.replaceChildren(...models.map(modelRow));
  }

  function modelRow(model) {
    // A talking face takes image + audio (or a driving video); other tasks list their roles,
    // each with the kinds of upload it accepts when more than one: "image + pose (pose|image)".
    // An image generator lists the conditions it takes ("seed" alone when unconditional).
    const roles = Object.entries(model.inputs || {});
    const inputs = model.task === "image-generation"
      ? ["seed"].concat(model.conditions || []).join(" + ") + (model.levels ? " (levels)" : "")
      : model.task === "talking-face" || !roles.length
        ? (model.accepts_video ? "image + audio or driving video" : "image + audio")
        : roles.map(([role, kinds]) => (kinds.length > 1 ? role + " (" + kinds.join("|") + ")" : role)).join(" + ");
    const options = (model.options || []).map((option) => {
      const value = option.default === null || option.default === undefined ? "" : "=" + option.default;
      return el("code", { title: option.help || "" }, option.name + value);
    });
    const spaced = options.flatMap((node, i) => (i ? [" ", node] : [node]));
    const weights = model.weights_in_use ? model.weights_in_use.kind : "";
    return el("tr", { "data-model-id": model.id }, [
      el("td", { title: model.paper || "" }, el("code", {}, model.id)),
      el("td", {}, model.task || ""),
      el("td", {}, inputs),
      el("td", {}, spaced),
      el("td", {}, [weights + " ", badge(model.ready ? "ready" : "missing")]),
      el("td", { class: "num" }, String((model.workers || []).length)),
    ]);
  }

  // ---------------------------------------------------------------- charts

  // Rounds an axis maximum up to one of the steps times a power of ten. Job counts use
  // even steps so that the middle grid line also falls on a whole number.
  const SECONDS_STEPS = [1, 2, 5, 10];
  const COUNT_STEPS = [2, 4, 6, 8, 10];

  function niceMax(value, steps) {
    if (!(value > 0)) return steps[0];
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of steps) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function minuteLabel(text) {
    const ms = parseTime(text);
    if (Number.isNaN(ms)) return "";
    const d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  // Horizontal grid lines with value labels, and time labels under the first, middle
  // and last minute. Returns the y scale.
  function drawAxes(chart, series, yMax, unit) {
    const plotH = CHART.height - CHART.top - CHART.bottom;
    const y = (v) => CHART.top + plotH * (1 - v / yMax);
    for (const v of [0, yMax / 2, yMax]) {
      const x2 = CHART.width - CHART.right;
      chart.append(svg("line", { class: "grid", x1: CHART.left, x2: x2, y1: y(v), y2: y(v) }));
      // Three significant digits at most: 2.5, 0.05 and 120 all print as written.
      const value = String(Number(v.toPrecision(3))) + unit;
      chart.append(text("axis-label", CHART.left - 6, y(v) + 4, "end", value));
    }
    const n = series.length;
    for (const i of n > 1 ? [0, Math.floor((n - 1) / 2), n - 1] : [0]) {
      const anchor = i === 0 ? "start" : i === n - 1 ? "end" : "middle";
      const x = i === 0 ? CHART.left : i === n - 1 ? CHART.width - CHART.right : xCenter(i, n);
      chart.append(text("axis-label", x, CHART.height - 6, anchor, minuteLabel(series[i].minute)));
    }
    return y;
  }

  function text(cls, x, y, anchor, content) {
    return svg("text", { class: cls, x: x, y: y, "text-anchor": anchor }, content);
  }

  // A rectangle between two heights on the value axis (top < bottom in SVG units).
  function bar(cls, x, width, top, bottom) {
    return svg("rect", { class: cls, x: x, y: top, width: width, height: Math.max(0, bottom - top) });
  }

  function xCenter(i, n) {
    const plotW = CHART.width - CHART.left - CHART.right;
    return CHART.left + plotW * (i + 0.5) / n;
  }

  function noData(chart, message) {
    chart.append(text("no-data", CHART.width / 2, CHART.height / 2, "middle", message));
  }

  // Stacked bars a minute: succeeded at the bottom, failed on top.
  function drawThroughput(series) {
    const chart = document.getElementById("throughput-chart");
    chart.replaceChildren();
    chart.setAttribute("data-minutes", series.length);
    if (series.length === 0) return noData(chart, "No data yet");
    const yMax = niceMax(Math.max(...series.map((m) => (m.succeeded || 0) + (m.failed || 0))), COUNT_STEPS);
    const y = drawAxes(chart, series, yMax, "");
    const slot = (CHART.width - CHART.left - CHART.right) / series.length;
    const barW = Math.max(1, slot * 0.75);
    series.forEach((m, i) => {
      const ok = m.succeeded || 0;
      const bad = m.failed || 0;
      const x = xCenter(i, series.length) - barW / 2;
      const group = svg("g", { "data-minute": m.minute, "data-succeeded": ok, "data-failed": bad }, [
        svg("title", {}, minuteLabel(m.minute) + ": " + ok + " succeeded, " + bad + " failed"),
        // A transparent full-height rect so the tooltip also shows over empty minutes.
        bar("hover-target", x, barW, CHART.top, y(0)),
      ]);
      if (ok > 0) group.append(bar("bar-succeeded", x, barW, y(ok), y(0)));
      if (bad > 0) group.append(bar("bar-failed", x, barW, y(ok + bad), y(ok)));
      chart.append(group);
    });
  }

  // One line each for p50 and p95; a minute without finished jobs breaks the line.
  function drawLatency(series) {
    const chart = document.getElementById("latency-chart");
    chart.replaceChildren();
    chart.setAttribute("data-minutes", series.length);
    const values = series.flatMap((m) => [m.p50_seconds, m.p95_seconds]).filter(Number.isFinite);
    if (values.length === 0) return noData(chart, "No job finished in this hour");
    // At least a one-second scale, so that near-instant jobs do not look like spikes.
    const y = drawAxes(chart, series, niceMax(Math.max(1, ...values), SECONDS_STEPS), " s");
    for (const key of ["p95_seconds", "p50_seconds"]) {
      const kind = key.slice(0, 3);
      chart.append(svg("path", { class: "line-" + kind, d: linePath(series, key, y) }));
      series.forEach((m, i) => {
        if (!Number.isFinite(m[key])) return;
        const tip = svg("title", {}, minuteLabel(m.minute) + " " + kind + ": " + formatSeconds(m[key]));
        const at = { class: "dot-" + kind, cx: xCenter(i, series.length), cy: y(m[key]), r: 2.5 };
        chart.append(svg("circle", at, tip));
      });
    }
  }

  function linePath(series, key, y) {
    let d = "";
    let drawing = false;
    series.forEach((m, i) => {
      if (!Number.isFinite(m[key])) {
        drawing = false;
        return;
      }
      d += (drawing ? " L " : " M ") + xCenter(i, series.length).toFixed(1) + " " + y(m[key]).toFixed(1);
      drawing = true;
    });
    return d.trim();
  }

  function renderStats(stats) {
    renderCounts(stats);
    const series = Array.isArray(stats.series) ? stats.series : [];
    drawThroughput(series);
    drawLatency(series);
  }

  // ---------------------------------------------------------------- polling

  const sources = [
    { name: "stats", path: "v1/stats?minutes=" + STATS_MINUTES, render: renderStats },
    { name: "running jobs", path: "v1/jobs?status=running&limit=" + RUNNING_LIMIT, render: renderRunning },
    { name: "recent jobs", path: "v1/jobs?limit=" + RECENT_LIMIT, render: renderRecent },
    { name: "workers", path: "v1/workers", render: renderWorkers },
    { name: "models", path: "v1/models", render: renderModels },
  ];

  // Each section is redrawn from its own request, so one failing endpoint leaves the
  // others live; its section keeps the last data and the banner says what failed.
  async function poll() {
    const results = await Promise.allSettled(sources.map((s) => getJson(s.path)));
    const failures = new Map(); // message -> names of the sections it hit
    results.forEach((result, i) => {
      let message = null;
      if (result.status === "rejected") {
        message = result.reason && result.reason.message ? result.reason.message : String(result.reason);
      } else {
        try {
          sources[i].render(result.value);
        } catch (err) {
          message = "unexpected answer (" + err.message + ")";
        }
      }
      if (message !== null) failures.set(message, (failures.get(message) || []).concat(sources[i].name));
    });
    // One line a distinct error: a missing key fails every request the same way.
    showStatus([...failures].map(([message, names]) => names.join(", ") + ": " + message));
    // A new poll is scheduled only once this one is done, so a slow server never
    // piles up requests.
    window.setTimeout(poll, POLL_MS);
  }

  function showStatus(errors) {
    const banner = document.getElementById("error-banner");
    const status = document.getElementById("last-update");
    if (errors.length === 0) {
      banner.hidden = true;
      banner.replaceChildren();
      status.textContent = "Updated " + clockTime(Date.now());
      status.setAttribute("data-updated-at", new Date().toISOString());
      return;
    }
    banner.replaceChildren(
      el("strong", {}, "Could not update the dashboard; retrying every " + POLL_MS / 1000 + " s."),
      el("ul", {}, errors.map((e) => el("li", {}, e))),
    );
    banner.hidden = false;
    const last = status.getAttribute("data-updated-at");
    status.textContent = last ? "Last good update " + clockTime(Date.parse(last)) : "No data yet";
  }

  poll();
})();
