// aigateway dashboard: polls admin/dashboard.json every second and draws what it says.
// No build step and no dependency but uPlot (vendor/). Text reaches the page through
// textContent only, never as markup.
(function () {
  "use strict";

  var DATA_URL = "admin/dashboard.json";
  var POLL_MS = 1000;
  var WINDOW_S = 900;
  var KEY_STORE = "aigateway.dashboard.key"; // sessionStorage: this tab only
  var THEME_STORE = "aigateway.dashboard.theme"; // localStorage: a preference, no secret
  var PRIORITIES = ["critical", "high", "normal", "low"];

  var root = document.documentElement;
  var needsKey = root.dataset.auth === "key";
  var state = {
    key: needsKey ? sessionStorage.getItem(KEY_STORE) || "" : "",
    since: 0,
    points: null, // the charts' columns, the last 15 minutes
    doc: null,
    timer: 0,
    busy: false, // a request is under way
    epoch: 0, // raised when the key changes
    tried: false, // the key was just typed in: say so if it is refused
    charts: {},
    providers: [], // configured providers, the order of the providers chart's series
  };

  function $(id) { return document.getElementById(id); }
  function fields(name) { return document.querySelectorAll('[data-field="' + name + '"]'); }
  function put(name, text) {
    fields(name).forEach(function (el) { el.textContent = text; });
  }
  function level(name, value) {
    fields(name).forEach(function (el) {
      var tile = el.closest(".tile");
      if (tile) { if (value) tile.dataset.level = value; else delete tile.dataset.level; }
    });
  }
  // A palette entry as a colour the charts' canvas can draw: the custom property holds
  // light-dark(...), which only a styled element resolves for the current scheme.
  var swatch = document.createElement("span");
  swatch.hidden = true;
  document.body.appendChild(swatch);
  function cssVar(name) {
    swatch.style.color = "var(" + name + ")";
    return getComputedStyle(swatch).color;
  }

  // -- numbers for people ---------------------------------------------------------------

  function num(v, digits) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    var d = digits === undefined ? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2) : digits;
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: 0 });
  }
  function dollars(v) {
    if (v === null || v === undefined) return "needs prices";
    if (v > 0 && v < 0.0001) return "< $0.0001"; // spent, if little: never shown as $0
    return "$" + num(v, Math.abs(v) >= 1 ? 2 : 4);
  }
  function count(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1e9) return num(v / 1e9, 1) + "G";
    if (v >= 1e6) return num(v / 1e6, 1) + "M";
    if (v >= 1e4) return num(v / 1e3, 1) + "k";
    return num(v, 0);
  }
  function pct(v) { return v === null || v === undefined ? "–" : num(v * 100, v >= 0.1 ? 1 : 2) + "%"; }
  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 10000) return num(v / 1000, 1) + " s";
    return num(v, v >= 100 ? 0 : v >= 10 ? 1 : 2) + " ms";
  }
  // Two latencies and their one unit: ["2.7 · 9.4", "ms"].
  function pair(a, b) {
    if (a === null || a === undefined) return ["–", "ms"];
    var big = Math.max(a, b || 0) >= 10000;
    var f = function (v) {
      return v === null || v === undefined ? "–" : big ? num(v / 1000, 1) : num(v, v >= 100 ? 0 : 1);
    };
    return [f(a) + " · " + f(b), big ? "s" : "ms"];
  }
  function bytes(v) {
    if (!v) return "0 B";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return num(v, i && v < 100 ? 1 : 0) + " " + units[i];
  }
  function duration(s) {
    s = Math.floor(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  // The time axis: 16:05, or 16:05:30 between whole minutes (no date: it is today's).
  function clockTicks(u, splits) {
    return splits.map(function (t) {
      var d = new Date(t * 1000);
      var two = function (n) { return (n < 10 ? "0" : "") + n; };
      var hm = two(d.getHours()) + ":" + two(d.getMinutes());
      return d.getSeconds() ? hm + ":" + two(d.getSeconds()) : hm;
    });
  }
  function sum(obj) {
    var total = 0;
    Object.keys(obj || {}).forEach(function (k) { total += obj[k] || 0; });
    return total;
  }

  // -- theme ----------------------------------------------------------------------------

  function effectiveTheme() {
    var chosen = root.dataset.theme;
    if (chosen === "light" || chosen === "dark") return chosen;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function showThemeButton() {
    // The button names the theme it switches to.
    $("theme").textContent = effectiveTheme() === "dark" ? "Light" : "Dark";
  }
  function applyTheme(theme) {
    if (theme) root.dataset.theme = theme; else delete root.dataset.theme;
    showThemeButton();
    rebuildCharts();
  }
  function initTheme() {
    var saved = localStorage.getItem(THEME_STORE);
    if (saved === "light" || saved === "dark") root.dataset.theme = saved;
    showThemeButton();
    $("theme").addEventListener("click", function () {
      var next = effectiveTheme() === "dark" ? "light" : "dark";
      localStorage.setItem(THEME_STORE, next);
      applyTheme(next);
    });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () {
      if (!root.dataset.theme) applyTheme(null);
    });
  }

  // -- charts ---------------------------------------------------------------------------

  // Each chart: its series (label, colour variable, the column it draws, its scale).
  function chartSpecs() {
    var specs = {
      traffic: {
        series: [
          { label: "requests/s", color: "--c1", get: function (p) { return p.requests_per_s; } },
          { label: "5xx/s", color: "--c4", get: function (p) { return p.errors_per_s; } },
          { label: "4xx/s", color: "--c2", get: function (p) { return p.client_errors_per_s; } },
        ],
      },
      latency: {
        series: [
          { label: "p50", color: "--c1", get: function (p) { return p.latency_p50_ms; } },
          { label: "p99", color: "--c3", get: function (p) { return p.latency_p99_ms; } },
          { label: "first token p50", color: "--c5", get: function (p) { return p.ttft_p50_ms; } },
          { label: "first token p99", color: "--c2", get: function (p) { return p.ttft_p99_ms; } },
        ],
        value: function (v) { return v === null ? "–" : ms(v); },
      },
      providers: { series: [] },
      cache: {
        series: [
          { label: "hit rate %", color: "--c5", scale: "%", get: function (p) {
            return p.cache_hit_rate.map(function (v) { return v === null ? null : v * 100; });
          } },
          { label: "calls avoided/s", color: "--c1", scale: "/s", get: function (p) { return p.avoided_calls_per_s; } },
        ],
      },
      queue: {
        series: PRIORITIES.map(function (priority, i) {
          return { label: priority, color: ["--c4", "--c2", "--c1", "--c6"][i],
            get: function (p) { return p.queue[priority]; } };
        }).concat([
          { label: "shed/s", color: "--c3", dash: true, get: function (p) { return p.shed_per_s; } },
        ]),
      },
    };
    var colors = ["--c1", "--c2", "--c3", "--c5", "--c6", "--c4"];
    state.providers.forEach(function (name, i) {
      specs.providers.series.push({ label: name + " calls/s", color: colors[i % colors.length],
        get: function (p) { return p.providers[name] ? p.providers[name].calls_per_s : []; } });
      specs.providers.series.push({ label: name + " errors/s", color: colors[i % colors.length], dash: true,
        get: function (p) { return p.providers[name] ? p.providers[name].errors_per_s : []; } });
    });
    return specs;
  }

  function chartData(spec) {
    var p = state.points;
    var data = [p.t];
    spec.series.forEach(function (s) {
      var column = s.get(p);
      data.push(column && column.length === p.t.length ? column : p.t.map(function () { return null; }));
    });
    return data;
  }

  function makeChart(el, spec) {
    var text = cssVar("--muted"), grid = cssVar("--grid");
    // At least a minute wide: a young node's few seconds get whole-second ticks.
    var scales = { x: { time: true, range: function (u, min, max) { return [Math.min(min, max - 60), max]; } } };
    var axes = [
      { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 },
        space: 70, values: clockTicks },
    ];
    // A second scale (the cache's calls/s beside its hit rate) gets its own axis on the
    // right, in its series' colour.
    var used = {};
    spec.series.forEach(function (s) { if (!used[s.scale || "y"]) used[s.scale || "y"] = s.color; });
    Object.keys(used).forEach(function (scale, i) {
      scales[scale] = scale === "%" ? { range: [0, 100] }
        : { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } };
      axes.push({ scale: scale, side: i === 0 ? 3 : 1, stroke: i === 0 ? text : cssVar(used[scale]),
        size: 48, grid: { show: i === 0, stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } });
    });
    var series = [{}].concat(spec.series.map(function (s) {
      return { label: s.label, scale: s.scale || "y", stroke: cssVar(s.color), width: 1.6,
        dash: s.dash ? [5, 4] : undefined, spanGaps: false, points: { show: false },
        value: spec.value ? function (u, v) { return spec.value(v); }
          : function (u, v) { return v === null ? "–" : num(v); } };
    }));
    var options = {
      width: Math.max(el.clientWidth, 200), height: 190,
      scales: scales, axes: axes, series: series,
      legend: { live: true }, cursor: { drag: { x: false, y: false } },
    };
    return new uPlot(options, chartData(spec), el);
  }

  function rebuildCharts() {
    if (!state.points || typeof uPlot === "undefined") return;
    var specs = chartSpecs();
    Object.keys(specs).forEach(function (name) {
      var el = document.querySelector('[data-chart="' + name + '"]');
      if (state.charts[name]) state.charts[name].chart.destroy();
      el.textContent = "";
      state.charts[name] = { chart: makeChart(el, specs[name]), spec: specs[name], el: el };
    });
  }

  function updateCharts() {
    Object.keys(state.charts).forEach(function (name) {
      var c = state.charts[name];
      c.chart.setData(chartData(c.spec));
    });
  }

  var resizing = 0;
  function resizeCharts() {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(function () {
      Object.keys(state.charts).forEach(function (name) {
        var c = state.charts[name];
        var width = Math.max(c.el.clientWidth, 200);
        if (width !== c.chart.width) c.chart.setSize({ width: width, height: 190 });
      });
    });
  }

  // Every column of a points object, sliced alike.
  function sliced(obj, from) {
    var out = {};
    Object.keys(obj).forEach(function (k) {
      out[k] = Array.isArray(obj[k]) ? obj[k].slice(from) : sliced(obj[k], from);
    });
    return out;
  }

  // The new points join the ones the page has (any it has already are skipped); points
  // older than 15 minutes go.
  function mergePoints(fresh) {
    if (!state.points) { state.points = fresh; return; }
    var p = state.points;
    var last = p.t.length ? p.t[p.t.length - 1] : 0;
    var skip = 0;
    while (skip < fresh.t.length && fresh.t[skip] <= last) skip++;
    fresh = sliced(fresh, skip);
    (function append(into, from) {
      Object.keys(from).forEach(function (k) {
        if (Array.isArray(from[k])) into[k] = (into[k] || []).concat(from[k]);
        else { into[k] = into[k] || {}; append(into[k], from[k]); }
      });
    })(p, fresh);
    last = p.t.length ? p.t[p.t.length - 1] : 0;
    var drop = 0;
    while (drop < p.t.length && p.t[drop] < last - WINDOW_S) drop++;
    if (drop) state.points = sliced(p, drop);
  }

  // -- panels ---------------------------------------------------------------------------

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }
  function badge(text, stateName) {
    var span = document.createElement("span");
    span.className = "badge";
    span.dataset.state = stateName;
    span.textContent = text;
    return span;
  }
  function meter(use, label, more) {
    var wrap = document.createElement("span");
    wrap.className = "meter";
    var track = document.createElement("span");
    track.className = "track";
    var fill = document.createElement("span");
    fill.className = "fill";
    var share = Math.max(0, Math.min(use || 0, 1));
    fill.style.width = (share * 100).toFixed(1) + "%";
    if (share >= 0.9) fill.dataset.level = "bad"; else if (share >= 0.7) fill.dataset.level = "warn";
    track.appendChild(fill);
    wrap.appendChild(track);
    var text = document.createElement("span");
    text.textContent = label;
    var detail = document.createElement("span");
    detail.className = "opt";
    detail.textContent = more;
    text.appendChild(detail);
    wrap.appendChild(text);
    return wrap;
  }
  function facts(dl, pairs) {
    dl.textContent = "";
    pairs.forEach(function (pair) {
      var div = document.createElement("div");
      var dt = document.createElement("dt");
      dt.textContent = pair[0];
      var dd = document.createElement("dd");
      dd.textContent = pair[1];
      if (pair[2]) dd.title = pair[2];
      div.appendChild(dt);
      div.appendChild(dd);
      dl.appendChild(div);
    });
  }
  var STATE_NAMES = { healthy: "closed", degraded: "degraded", half_open: "half-open", open: "open" };

  function renderSummary(doc) {
    var s = doc.summary;
    put("requests_per_s", num(s.requests_per_s));
    put("in_flight", doc.node.in_flight + " in flight");
    put("error_rate", s.error_rate === null ? "–" : pct(s.error_rate));
    put("errors_sub", "5xx answers");
    level("error_rate", s.error_rate >= 0.05 ? "bad" : s.error_rate >= 0.01 ? "warn" : "");
    var latency = pair(s.latency_p50_ms, s.latency_p99_ms);
    put("latency", latency[0]);
    put("latency_sub", latency[1] + ", provider calls");
    put("ttft_p50_ms", ms(s.ttft_p50_ms));
    put("overhead", "overhead " + ms(s.overhead_p50_ms));
    put("cache_hit_rate", doc.cache.enabled ? pct(s.cache_hit_rate) : "off");
    put("avoided", count(doc.cache.avoided.calls) + " calls avoided");
    var depth = sum(s.queue_depth);
    put("queue_depth", count(depth));
    put("shed", count(sum(doc.queue.shed)) + " shed");
    level("queue_depth", depth > 0 ? "warn" : "");
    var configured = doc.providers.filter(function (p) { return p.configured; });
    put("circuits", s.circuits_open ? s.circuits_open + " open" : "closed");
    put("circuits_sub", configured.length + " provider" + (configured.length === 1 ? "" : "s"));
    level("circuits", s.circuits_open ? "bad" : "");
    var spend = doc.spend;
    var spent = spend.available ? spend.since_start_usd : null;
    put("spend", spent === null ? "–" : spent > 0 && spent < 0.01 ? "< $0.01" : "$" + num(spent, 2));
    put("spend_sub", !spend.available ? "–" : spend.keys.count || spend.keys.total_usd
      ? "keys today " + dollars(spend.keys.today_usd) : "since start");
    put("nodes", String(s.nodes));
    put("nodes_sub", doc.cluster ? "Redis " + doc.cluster.redis : "no cluster");
    level("nodes", doc.cluster && doc.cluster.redis !== "up" ? "warn" : "");
  }

  function renderProviders(doc) {
    var body = $("provider-rows");
    body.textContent = "";
    var hidden = [];
    doc.providers.forEach(function (p) {
      if (!p.configured) { hidden.push(p.name); return; }
      var row = document.createElement("tr");
      cell(row, p.name);
      var circuit = cell(row, "");
      var label = STATE_NAMES[p.state] || p.state;
      if (p.state === "open" && p.retry_after_s) label += " · " + num(p.retry_after_s, 0) + " s";
      circuit.appendChild(badge(label, p.state));
      cell(row, num(p.calls_per_s), "num");
      cell(row, num(p.errors_per_s), "num");
      cell(row, ms(p.p50_ms), "num opt");
      cell(row, ms(p.p99_ms), "num opt");
      var limit = cell(row, "");
      var text = p.rate_use === null ? "no limit" : num(p.rate_use * 100, 0) + "%";
      var more = p.rate_use === null ? "" : " of " + num(p.rate_limit_per_s) + "/s";
      if (p.paused_for_s > 0) more += " · paused " + num(p.paused_for_s, 0) + " s";
      limit.appendChild(meter(p.rate_use, text, more));
      cell(row, count(sum(p.queue_depth)), "num opt");
      body.appendChild(row);
    });
    var note = $("unconfigured");
    note.hidden = !hidden.length;
    note.textContent = hidden.length ? "Not configured (no key): " + hidden.join(", ") : "";
    var names = doc.providers.filter(function (p) { return p.configured; }).map(function (p) { return p.name; });
    if (names.join() !== state.providers.join()) {
      state.providers = names;
      rebuildCharts();
    }
  }

  function renderCache(doc) {
    var c = doc.cache;
    var ways = Object.keys(c.avoided.calls_by_way).map(function (way) {
      return way + " " + count(c.avoided.calls_by_way[way]);
    }).join(", ");
    facts($("cache-facts"), c.enabled ? [
      ["Hit rate (since start)", pct(c.hit_rate)],
      ["Hits · misses", count(c.hits) + " · " + count(c.misses)],
      ["Entries", count(c.entries)],
      ["Size", bytes(c.bytes) + " / " + bytes(c.budget_bytes), "of CACHE_MAX_MB"],
      ["Calls avoided", count(c.avoided.calls), ways],
      ["Tokens avoided", count(c.avoided.tokens)],
      ["Dollars avoided", dollars(c.avoided.dollars), "at the price table's prices"],
    ] : [
      ["Cache", "off (CACHE_ENABLED=false)"],
      ["Calls avoided", count(c.avoided.calls), ways],
      ["Tokens avoided", count(c.avoided.tokens)],
    ]);
  }

  function renderQueue(doc) {
    var q = doc.queue;
    facts($("queue-facts"), PRIORITIES.map(function (priority) {
      return [priority, count(q.depth[priority]) + " waiting · " + count(q.shed[priority]) + " shed"];
    }).concat([["Queue size", count(q.queue_size)], ["Timed out", count(sum(q.timed_out))]]));
  }

  function renderCluster(doc) {
    var c = doc.cluster;
    var table = $("cluster-table");
    if (!c) {
      $("cluster-note").textContent = "One node: REDIS_URL is not set.";
      table.hidden = true;
      return;
    }
    var note = (c.name ? c.name + ": " : "") + c.nodes + " node" + (c.nodes === 1 ? "" : "s") +
      ", Redis " + c.redis + (c.reason ? " (" + c.reason + ")" : "");
    $("cluster-note").textContent = note;
    table.hidden = false;
    var body = $("cluster-rows");
    body.textContent = "";
    (c.members || []).forEach(function (m) {
      var f = m.figures || {};
      var row = document.createElement("tr");
      cell(row, m.id + (m.id === c.node ? " (this node)" : ""));
      cell(row, count(f.requests), "num");
      cell(row, count(f.errors), "num");
      cell(row, count(f.cache_hits), "num opt");
      cell(row, count(f.in_flight), "num opt");
      cell(row, num((m.seen_ms_ago || 0) / 1000, 1) + " s ago", "num");
      body.appendChild(row);
    });
  }

  var PERIOD_NAMES = { day: "today", month: "this month", total: "in all" };

  function limitsText(k) {
    var parts = [];
    if (k.rpm !== null) parts.push(count(k.rpm) + " rpm");
    if (k.tpm !== null) parts.push(count(k.tpm) + " tpm");
    if (k.max_parallel !== null) parts.push(k.in_flight + "/" + k.max_parallel + " parallel");
    return parts.length ? parts.join(" · ") : k.state === "revoked" ? "–" : "none";
  }

  function renderSpend(doc) {
    var sp = doc.spend;
    var note = $("spend-note");
    note.hidden = sp.available;
    note.textContent = sp.available ? "" : "Not available: " + sp.reason + ".";
    if (!sp.available) {
      $("spend-table").hidden = $("model-table").hidden = $("model-note").hidden = true;
      $("spend-facts").textContent = "";
      return;
    }
    var keys = sp.keys;
    facts($("spend-facts"), [
      ["Since the node started", dollars(sp.since_start_usd), "every priced answer, with a key or without"],
      ["Keys today", dollars(keys.today_usd), "UTC day, as the key store has it"],
      ["Keys this month", dollars(keys.month_usd)],
      ["Keys in all", dollars(keys.total_usd)],
      ["Keys", count(keys.count)],
    ]);
    var body = $("spend-rows");
    body.textContent = "";
    keys.top.forEach(function (k) {
      var row = document.createElement("tr");
      row.dataset.key = k.name;
      cell(row, k.name).title = k.prefix ? k.prefix + "…" : k.id;
      cell(row, "").appendChild(badge(k.state, k.state));
      var spent = k.period_usd === null ? k.total_usd : k.period_usd;
      cell(row, dollars(spent), "num").title = k.period ? PERIOD_NAMES[k.period] || k.period : "in all";
      var budget = cell(row, "");
      if (k.budget_use === null) {
        budget.textContent = k.state === "revoked" ? "–" : "no budget";
      } else {
        budget.appendChild(meter(k.budget_use, pct(k.budget_use),
          " of " + dollars(k.budget_usd) + " " + (PERIOD_NAMES[k.period] || k.period)));
      }
      cell(row, dollars(k.total_usd), "num opt");
      cell(row, count(k.requests), "num opt");
      cell(row, limitsText(k), "opt");
      body.appendChild(row);
    });
    $("spend-table").hidden = !keys.top.length;
    var more = $("spend-more");
    var listed = keys.top.length;
    var all = keys.count + keys.revoked_with_spend;
    more.hidden = listed >= all && listed > 0;
    more.textContent = !all ? "No tenant keys yet: make one with POST /admin/keys."
      : "The " + listed + " keys that spent most, of " + all + ".";
    var models = $("model-rows");
    models.textContent = "";
    sp.by_model.forEach(function (m) {
      var row = document.createElement("tr");
      cell(row, m.provider);
      cell(row, m.model);
      cell(row, dollars(m.usd), "num");
      models.appendChild(row);
    });
    $("model-table").hidden = $("model-note").hidden = !sp.by_model.length;
  }

  function render(doc) {
    state.doc = doc;
    var node = doc.node;
    $("node").textContent = "v" + doc.version + " · " + node.workers + " worker" +
      (node.workers === 1 ? "" : "s") + " · up " + duration(node.uptime_s);
    renderSummary(doc);
    renderProviders(doc);
    renderCache(doc);
    renderQueue(doc);
    renderCluster(doc);
    renderSpend(doc);
    var first = !state.points;
    mergePoints(doc.charts);
    if (doc.charts.t.length) state.since = doc.charts.t[doc.charts.t.length - 1];
    if (first || !Object.keys(state.charts).length) rebuildCharts(); else updateCharts();
  }

  // -- talking to the gateway -----------------------------------------------------------

  function setStatus(name, text) {
    var el = $("status");
    el.dataset.state = name;
    el.textContent = text;
  }

  function showLogin(message) {
    clearTimeout(state.timer);
    $("board").hidden = true;
    $("login").hidden = false;
    $("signout").hidden = true;
    var error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    setStatus("connecting", "key needed");
    $("key").focus();
  }

  function showBoard() {
    $("login").hidden = true;
    $("notice").hidden = true;
    $("board").hidden = false;
    $("signout").hidden = !needsKey;
    resizeCharts();
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, POLL_MS);
  }

  function errorMessage(body, fallback) {
    return body && body.error && body.error.message ? body.error.message : fallback;
  }

  function poll() {
    if (document.hidden || state.busy) return; // visibilitychange polls again
    state.busy = true;
    var headers = { Accept: "application/json" };
    if (state.key) headers.Authorization = "Bearer " + state.key;
    var url = DATA_URL + "?since=" + encodeURIComponent(state.since);
    var epoch = state.epoch;
    fetch(url, { headers: headers, cache: "no-store", credentials: "omit" }).then(function (res) {
      if (epoch !== state.epoch) return; // asked with a key since typed in or forgotten
      state.busy = false;
      return res.json().catch(function () { return null; }).then(function (body) {
        if (res.status === 401 || (res.status === 403 && needsKey)) {
          sessionStorage.removeItem(KEY_STORE);
          state.key = "";
          showLogin(state.tried ? "That key was refused (" + errorMessage(body, "status " + res.status) + ")." : "");
          state.tried = false;
          return;
        }
        if (res.status === 403) {
          $("board").hidden = true;
          var notice = $("notice");
          notice.hidden = false;
          notice.textContent = errorMessage(body, "This dashboard answers this machine only.");
          setStatus("offline", "refused");
          return;
        }
        if (!res.ok || !body) {
          setStatus("stale", "error " + res.status);
          schedule();
          return;
        }
        if (state.tried && state.key) sessionStorage.setItem(KEY_STORE, state.key);
        state.tried = false;
        showBoard();
        render(body);
        setStatus("live", "live");
        schedule();
      });
    }, function () {
      if (epoch !== state.epoch) return;
      state.busy = false;
      setStatus("offline", "gateway unreachable, retrying");
      schedule();
    });
  }

  // A new key (or none): answers to requests made with the old one are ignored.
  function newEpoch() {
    state.epoch++;
    state.busy = false;
    clearTimeout(state.timer);
  }

  function initLogin() {
    $("login-form").addEventListener("submit", function (event) {
      event.preventDefault();
      newEpoch();
      state.key = $("key").value;
      $("key").value = "";
      state.tried = true;
      state.since = 0;
      state.points = null;
      poll();
    });
    $("signout").addEventListener("click", function () {
      newEpoch();
      sessionStorage.removeItem(KEY_STORE);
      state.key = "";
      showLogin("");
    });
  }

  function start() {
    initTheme();
    initLogin();
    window.addEventListener("resize", resizeCharts);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && $("login").hidden) poll();
    });
    if (needsKey && !state.key) showLogin("");
    else poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
