/* airflow-predictive UI pages: fetch the plugin's JSON API (same origin, Airflow's _token cookie)
   and draw uPlot charts with units. Every chart is registered in window.Predictive.charts with its
   series labels and data, and carries data-series / data-points attributes, so tests can read
   back exactly what was drawn. No network access beyond this server. */
(function () {
  "use strict";
  var MIB = 1024 * 1024;
  var GIB = 1024 * MIB;
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

  var Predictive = { charts: {}, ready: false, errors: [] };
  var TITLES = { cpu_cores: "CPU", memory_bytes: "Memory", disk_read_bps: "Disk read", disk_write_bps: "Disk write",
    net_rx_bps: "Network received", net_tx_bps: "Network sent", gpu_util: "GPU utilisation", gpu_memory_bytes: "GPU memory" };
  window.Predictive = Predictive;

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }

  function params() { return new URLSearchParams(window.location.search); }

  function api(path) {
    return fetch("api/" + path, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) throw new Error(r.status === 401 ? "Please log in to Airflow first." : "You may not see this DAG.");
        if (r.status === 404) throw new Error("Nothing recorded for this yet: the provider stores a try once its task has run with recording on.");
        if (!r.ok) return r.json().catch(function () { return {}; }).then(function (b) { throw new Error(b.detail || ("HTTP " + r.status)); });
        return r.json();
      });
  }

  function fmtBytes(v) {
    if (v === null || v === undefined) return "–";
    if (Math.abs(v) >= GIB) return (v / GIB).toFixed(2) + " GiB";
    return (v / MIB).toFixed(0) + " MiB";
  }
  function fmtNum(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits === undefined ? 2 : digits); }
  function fmtPct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(0) + " %"; }
  function fmtTime(s) { return s ? new Date(s).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"; }

  /* unit of a metric for display: values are scaled to it before plotting */
  function displayUnit(metric, unit) {
    if (unit === "bytes") return { label: "MiB", scale: 1 / MIB };
    if (unit === "bytes/s") return { label: "MiB/s", scale: 1 / MIB };
    if (unit === "cores") return { label: "cores", scale: 1 };
    if (unit === "fraction") return { label: "devices busy", scale: 1 };
    return { label: unit || "", scale: 1 };
  }

  function table(headers, rows) {
    var t = el("table", {}, [el("tr", {}, headers.map(function (h) { return el("th", { text: h }); }))]);
    rows.forEach(function (r) {
      t.appendChild(el("tr", {}, r.map(function (c) {
        if (c instanceof Node) return el("td", {}, [c]);
        return el("td", { text: c === null || c === undefined ? "–" : String(c) });
      })));
    });
    return t;
  }

  /* Align several (x[], y[]) series on one x axis (union of x, nulls elsewhere), as uPlot wants. */
  function align(list) {
    var xs = {};
    list.forEach(function (s) { s.x.forEach(function (x) { xs[x] = true; }); });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var index = {};
    x.forEach(function (v, i) { index[v] = i; });
    var data = [x];
    list.forEach(function (s) {
      var y = new Array(x.length).fill(null);
      s.x.forEach(function (xv, i) { y[index[xv]] = s.y[i]; });
      data.push(y);
    });
    return data;
  }

  /* One chart. spec: {id, title, xLabel, yLabel, time (x is epoch s), series: [{label, x, y, kind}]}
     kind: "line" (default), "step" (value holds until the next point), "points" (markers only). */
  function chart(parent, spec) {
    var box = el("div", { class: "chart", id: spec.id });
    parent.appendChild(el("h2", { text: spec.title }));
    parent.appendChild(box);
    var series = spec.series.filter(function (s) { return s.x.length > 0; });
    if (!series.length) {
      box.appendChild(el("p", { class: "note", text: "No data." }));
      box.setAttribute("data-series", "[]");
      Predictive.charts[spec.id] = { labels: [], data: [] };
      return null;
    }
    var data = align(series);
    var opts = {
      width: Math.max(480, Math.min(1100, (parent.clientWidth || 900) - 10)),
      height: 280,
      scales: { x: { time: !!spec.time } },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },  // axes say UTC
      axes: [
        { label: spec.xLabel },
        { label: spec.yLabel, size: 70 }
      ],
      series: [{ label: spec.xLabel }].concat(series.map(function (s, i) {
        var o = { label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: s.width || 1.5, spanGaps: true };
        if (s.kind === "step") o.paths = uPlot.paths.stepped({ align: 1 });
        if (s.kind === "points") { o.paths = function () { return null; }; o.points = { show: true, size: 9 }; }
        if (s.dash) o.dash = s.dash;
        if (s.fill) o.fill = s.fill;
        return o;
      }))
    };
    if (data[0].length === 1) {  // one point: a readable range around it instead of uPlot's default
      var x0 = data[0][0], pad = spec.time ? 86400 : 1;
      opts.scales.x.range = [x0 - pad, x0 + pad];
    }
    var plot = new uPlot(opts, data, box);
    var labels = series.map(function (s) { return s.label; });
    box.setAttribute("data-series", JSON.stringify(labels));
    box.setAttribute("data-points", String(data[0].length));
    Predictive.charts[spec.id] = { labels: labels, data: data, plot: plot, yLabel: spec.yLabel, xLabel: spec.xLabel };
    return plot;
  }

  function scaled(values, scale) { return values.map(function (v) { return v === null ? null : v * scale; }); }

  // -- pages ---------------------------------------------------------------------------------

  function overview(main) {
    return api("overview").then(function (o) {
      main.appendChild(el("h2", { text: "Tasks under prediction" }));
      main.appendChild(table(
        ["Task", "Tries", "OOM kills", "Champion", "Declared memory", "Predicted p99 peak", "Memory saved / try",
         "Declared CPU", "Predicted p90 CPU", "CPU saved / try", "Backtest memory under-rate", "Live coverage"],
        o.tasks.map(function (t) {
          var q = "dag_id=" + encodeURIComponent(t.dag_id) + "&task_id=" + encodeURIComponent(t.task_id) + "&map_index=" + t.map_index;
          return [el("a", { href: "task?" + q, text: t.dag_id + "." + t.task_id + (t.map_index >= 0 ? "[" + t.map_index + "]" : "") }),
            t.runs, t.oom_killed, t.champion, fmtBytes(t.declared_memory_bytes), fmtBytes(t.predicted_memory_p99_bytes),
            fmtBytes(t.memory_saved_bytes), fmtNum(t.declared_cpu_cores), fmtNum(t.predicted_cpu_p90_cores),
            fmtNum(t.cpu_saved_cores), fmtPct(t.backtest_memory_under_rate), fmtPct(t.live_coverage)];
        })));
      main.appendChild(el("p", { class: "note", text: "Saved: declared minus the forecast's peak (memory p99, CPU p90), per try. Backtest under-rate: share of the champion's backtest forecasts whose memory fell short of the actual. Live coverage: share of the last 20 tries whose memory peak stayed within the current p99 forecast." }));
      var days = o.daily.map(function (d) { return Date.parse(d.day + "T00:00:00Z") / 1000; });
      chart(main, { id: "chart-headroom", title: "Declared minus actual peak memory, summed per day", time: true, xLabel: "day (UTC)", yLabel: "GiB",
        series: [{ label: "memory headroom (GiB)", x: days, y: o.daily.map(function (d) { return d.memory_headroom_bytes / GIB; }) }] });
      chart(main, { id: "chart-tries", title: "Tries and OOM kills per day", time: true, xLabel: "day (UTC)", yLabel: "tries",
        series: [{ label: "tries", x: days, y: o.daily.map(function (d) { return d.runs; }) },
                 { label: "OOM kills", x: days, y: o.daily.map(function (d) { return d.oom_killed; }), color: "#d62728" }] });
    });
  }

  function task(main) {
    var p = params();
    var dag = p.get("dag_id"), tsk = p.get("task_id"), mi = p.get("map_index") || "-1";
    var offset = parseInt(p.get("offset") || "0", 10), limit = parseInt(p.get("limit") || "50", 10);
    document.getElementById("title").textContent = "Task " + dag + "." + tsk;
    return api("tasks/" + encodeURIComponent(dag) + "/" + encodeURIComponent(tsk) + "/runs?map_index=" + mi + "&offset=" + offset + "&limit=" + limit)
      .then(function (page) {
        var runs = page.items.slice().reverse();
        var x = runs.map(function (r) { return r.start ? Date.parse(r.start) / 1000 : null; });
        var keep = x.map(function (v) { return v !== null; });
        function pick(arr) { return arr.filter(function (_, i) { return keep[i]; }); }
        var xs = pick(x);
        chart(main, { id: "chart-task-memory", title: "Peak memory per try against declared", time: true, xLabel: "try start (UTC)", yLabel: "MiB",
          series: [{ label: "peak memory (MiB)", x: xs, y: pick(runs.map(function (r) { return r.peak.memory_bytes === undefined ? null : r.peak.memory_bytes / MIB; })) },
                   { label: "declared memory (MiB)", x: xs, y: pick(runs.map(function (r) { return r.declared.memory_bytes === undefined ? null : r.declared.memory_bytes / MIB; })), kind: "step", dash: [6, 4] }] });
        chart(main, { id: "chart-task-cpu", title: "Peak CPU per try against declared", time: true, xLabel: "try start (UTC)", yLabel: "cores",
          series: [{ label: "peak CPU (cores)", x: xs, y: pick(runs.map(function (r) { return r.peak.cpu_cores === undefined ? null : r.peak.cpu_cores; })) },
                   { label: "declared CPU (cores)", x: xs, y: pick(runs.map(function (r) { return r.declared.cpu_cores === undefined ? null : r.declared.cpu_cores; })), kind: "step", dash: [6, 4] }] });
        main.appendChild(el("h2", { text: "Tries " + (page.total ? (offset + 1) + "–" + (offset + page.items.length) + " of " + page.total : "(none)") }));
        main.appendChild(table(["Run", "Try", "Start", "Duration (s)", "Outcome", "Peak memory", "Peak CPU (cores)"],
          page.items.map(function (r) {
            return [el("a", { href: "try?run_pk=" + r.run_pk, text: r.run_id }), r.try_number, fmtTime(r.start), fmtNum(r.duration_s, 1), r.outcome,
              fmtBytes(r.peak.memory_bytes), fmtNum(r.peak.cpu_cores)];
          })));
        var pager = el("div", { class: "pager" });
        function go(o) { p.set("offset", String(Math.max(0, o))); window.location.search = p.toString(); }
        if (offset > 0) { var b = el("button", { id: "prev", text: "Newer" }); b.onclick = function () { go(offset - limit); }; pager.appendChild(b); }
        if (offset + page.items.length < page.total) { var n = el("button", { id: "next", text: "Older" }); n.onclick = function () { go(offset + limit); }; pager.appendChild(n); }
        main.appendChild(pager);
      });
  }

  function stepSeries(list, metric, label, scale, opts) {
    var s = list.filter(function (x) { return x.metric === metric; })[0];
    if (!s) return [];
    return [Object.assign({ label: label, x: s.t, y: scaled(s.v, scale), kind: "step" }, opts || {})];
  }

  function tryPage(main) {
    var p = params();
    var path = p.get("run_pk") ? "tries/" + encodeURIComponent(p.get("run_pk"))
      : "try?dag_id=" + encodeURIComponent(p.get("dag_id") || "") + "&task_id=" + encodeURIComponent(p.get("task_id") || "") +
        "&run_id=" + encodeURIComponent(p.get("run_id") || "") + "&map_index=" + encodeURIComponent(p.get("map_index") || "-1") +
        (p.get("try_number") ? "&try_number=" + encodeURIComponent(p.get("try_number")) : "");
    return api(path).then(function (d) {
      var r = d.run;
      document.getElementById("title").textContent = r.dag_id + "." + r.task_id + " · " + r.run_id + " · try " + r.try_number;
      var tries = el("p", { class: "tries" }, ["Tries: "]);
      d.tries.forEach(function (n) {
        var q = new URLSearchParams({ dag_id: r.dag_id, task_id: r.task_id, run_id: r.run_id, map_index: String(r.map_index), try_number: String(n) });
        tries.appendChild(el("a", { href: "try?" + q.toString(), class: n === r.try_number ? "current" : "", text: String(n) }));
      });
      main.appendChild(tries);
      var info = el("p", {}, ["Outcome " + r.outcome + " · started " + fmtTime(r.start) + " · " + fmtNum(r.duration_s, 1) + " s · " +
        r.n_samples + " samples · "]);
      info.appendChild(el("a", { href: "task?dag_id=" + encodeURIComponent(r.dag_id) + "&task_id=" + encodeURIComponent(r.task_id) + "&map_index=" + r.map_index, text: "all tries of this task" }));
      main.appendChild(info);

      var metrics = d.curves.map(function (c) { return c.metric; });
      ["memory_bytes", "cpu_cores"].forEach(function (mtr) { if (metrics.indexOf(mtr) < 0 && d.forecast && d.forecast.bands.some(function (b) { return b.metric === mtr; })) metrics.push(mtr); });
      metrics.forEach(function (metric) {
        var curve = d.curves.filter(function (c) { return c.metric === metric; })[0];
        var band = d.forecast ? d.forecast.bands.filter(function (b) { return b.metric === metric; })[0] : null;
        var unit = displayUnit(metric, (curve || band).unit);
        var series = [];
        if (curve) series.push({ label: "actual", x: curve.t, y: scaled(curve.v, unit.scale), width: 2, color: "#1f2933" });
        if (band) {
          series.push({ label: "forecast p50", x: band.t, y: scaled(band.p50, unit.scale), kind: "step", color: "#2ca02c" });
          series.push({ label: "forecast p90", x: band.t, y: scaled(band.p90, unit.scale), kind: "step", color: "#ff7f0e" });
          series.push({ label: "forecast p99", x: band.t, y: scaled(band.p99, unit.scale), kind: "step", color: "#d62728" });
        }
        series = series.concat(stepSeries(d.planned, metric, "plan limit", unit.scale, { color: "#9467bd", dash: [8, 4] }));
        series = series.concat(stepSeries(d.in_force, metric, "limit in force", unit.scale, { color: "#1f77b4", width: 2.5 }));
        var ev = d.shaping.filter(function (e) { return e.metric === metric && (e.after !== null || e.target !== null); });
        if (ev.length) series.push({ label: "shaping events", x: ev.map(function (e) { return e.t_s; }), y: ev.map(function (e) { return (e.after !== null ? e.after : e.target) * unit.scale; }), kind: "points", color: "#e377c2" });
        chart(main, { id: "chart-" + metric, title: (TITLES[metric] || metric) + " (" + unit.label + ")", xLabel: "seconds since start", yLabel: unit.label, series: series });
      });
      if (d.forecast) main.appendChild(el("p", { class: "note", text: "Forecast: " + d.forecast.estimator + (d.forecast.model_version ? " (model " + d.forecast.model_version + ")" : "") + ", the task's current cached forecast" + (d.forecast.explanation ? ": " + d.forecast.explanation : "") }));
      else main.appendChild(el("p", { class: "note", text: "No forecast stored for this task." }));

      main.appendChild(el("h2", { text: "Allocation plan" }));
      if (d.plan) {
        main.appendChild(el("p", { text: "Reservation " + d.plan.reservation_id + " in pool " + d.plan.pool + " (" + d.plan.state + "), source " + d.plan.source + ": " + d.plan.why }));
        var rows = [[0, fmtBytes(d.plan.initial.limits.memory_bytes), fmtNum(d.plan.initial.limits.cpu_cores), "initial"]];
        d.plan.steps.forEach(function (s) { rows.push([fmtNum(s.at_s, 0), fmtBytes(s.allocation.limits.memory_bytes), fmtNum(s.allocation.limits.cpu_cores), s.reason]); });
        main.appendChild(table(["At (s)", "Memory limit", "CPU limit (cores)", "Why"], rows));
      } else main.appendChild(el("p", { class: "note", text: "No plan: this try ran on its declared resources." }));

      main.appendChild(el("h2", { text: "Shaping events" }));
      main.appendChild(d.shaping.length ? table(["t (s)", "Metric", "Action", "Cause", "Verdict", "Before", "After", "Reason"],
        d.shaping.map(function (e) {
          var f = e.metric === "memory_bytes" ? fmtBytes : fmtNum;
          return [fmtNum(e.t_s, 1), e.metric, e.action, e.cause, e.verdict, f(e.before), f(e.after), e.reason];
        })) : el("p", { class: "note", text: "No shaping events for this try." }));

      main.appendChild(el("h2", { text: "Champion model" }));
      if (d.champion) {
        main.appendChild(el("p", { text: (d.champion.champion || "none (cold start)") + (d.champion.model_version ? " · model " + d.champion.model_version : "") + " · " + d.champion.runs + " runs · " + (d.champion.reason || "") }));
        main.appendChild(table(["Estimator", "Backtest forecasts", "Pinball loss", "Memory under-rate", "Memory shortfall", "Score", "Error"],
          d.champion.scores.map(function (s) { return [s.estimator, s.forecasts, fmtNum(s.pinball, 3), fmtPct(s.memory_under_rate), fmtNum(s.memory_shortfall, 3), fmtNum(s.score, 3), s.error]; })));
      } else main.appendChild(el("p", { class: "note", text: "No profile trained for this task yet." }));
    });
  }

  function pools(main) {
    return api("pools").then(function (list) {
      if (!list.pools.length) { main.appendChild(el("p", { class: "note", text: "No pools in the ledger yet." })); return null; }
      main.appendChild(table(["Pool", "Kind", "Memory capacity", "CPU capacity (cores)", "Active reservations", "Note"],
        list.pools.map(function (p) { return [p.name, p.kind, fmtBytes(p.capacity_limits.memory_bytes || p.capacity_requests.memory_bytes), fmtNum(p.capacity_limits.cpu_cores || p.capacity_requests.cpu_cores), p.active_reservations, p.note]; })));
      var window_s = params().get("window_s") || "3600";
      return Promise.all(list.pools.map(function (p) { return api("pools/" + encodeURIComponent(p.name) + "?window_s=" + window_s); })).then(function (details) {
        details.forEach(function (d, i) {
          var cap = d.pool.capacity_requests.memory_bytes || d.pool.capacity_limits.memory_bytes;
          var capCpu = d.pool.capacity_requests.cpu_cores || d.pool.capacity_limits.cpu_cores;
          var memSeries = [{ label: "reserved (GiB)", x: d.t, y: d.reserved_memory_bytes.map(function (v) { return v / GIB; }), kind: "step", fill: "rgba(31,119,180,0.15)" },
                           { label: "used (GiB)", x: d.t, y: scaled(d.used_memory_bytes, 1 / GIB), color: "#2ca02c" }];
          if (cap) memSeries.push({ label: "capacity (GiB)", x: d.t, y: d.t.map(function () { return cap / GIB; }), color: "#d62728", dash: [6, 4] });
          chart(main, { id: "chart-pool-memory-" + i, title: "Pool " + d.pool.name + ": memory", time: true, xLabel: "time (UTC)", yLabel: "GiB", series: memSeries });
          var cpuSeries = [{ label: "reserved (cores)", x: d.t, y: d.reserved_cpu_cores, kind: "step", fill: "rgba(31,119,180,0.15)" },
                           { label: "used (cores)", x: d.t, y: d.used_cpu_cores, color: "#2ca02c" }];
          if (capCpu) cpuSeries.push({ label: "capacity (cores)", x: d.t, y: d.t.map(function () { return capCpu; }), color: "#d62728", dash: [6, 4] });
          chart(main, { id: "chart-pool-cpu-" + i, title: "Pool " + d.pool.name + ": CPU", time: true, xLabel: "time (UTC)", yLabel: "cores", series: cpuSeries });
          main.appendChild(el("h2", { text: "Held back in " + d.pool.name }));
          main.appendChild(d.held_back.length ? table(["At", "Task", "Run", "Try", "Decision", "Why"],
            d.held_back.map(function (h) { return [fmtTime(h.at), h.dag_id + "." + h.task_id, h.run_id, h.try_number, h.decision, h.reason]; }))
            : el("p", { class: "note", text: "No task held back." }));
        });
      });
    });
  }

  var PAGES = { overview: overview, task: task, try: tryPage, pools: pools };

  Predictive.start = function (name) {
    document.addEventListener("DOMContentLoaded", function () {
      var main = document.getElementById("main");
      var status = document.getElementById("status");
      Promise.resolve().then(function () { return PAGES[name](main); }).then(function () {
        status.textContent = "";
        Predictive.readyMs = performance.now();  // ms since navigation start: the page-load figure
        Predictive.ready = true;
        document.body.setAttribute("data-ready", "true");
      }).catch(function (err) {
        status.textContent = err.message;
        status.className = "error";
        Predictive.errors.push(err.message);
        document.body.setAttribute("data-ready", "error");
      });
    });
  };
})();
