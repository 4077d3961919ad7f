// Prompt Registry console: the charts of a prompt's runs. Everything else
// works without script; htmx enhances the search and the "try it" form.
"use strict";

(function () {
  const COLORS = ["#0a58ca", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

  // Small figures (costs, error rates) keep three significant digits.
  function tick(v) {
    if (v === 0 || Math.abs(v) >= 100) {
      return String(Math.round(v));
    }
    return String(Number(v.toPrecision(3)));
  }

  function draw(container) {
    let data;
    try {
      data = JSON.parse(container.dataset.chart);
    } catch (e) {
      return;
    }
    if (!data || !Array.isArray(data.x) || data.x.length === 0 || typeof uPlot === "undefined") {
      container.querySelectorAll(".chart").forEach(function (el) {
        el.textContent = "No runs in this range.";
      });
      return;
    }
    container.querySelectorAll(".chart").forEach(function (el) {
      const metric = el.dataset.metric;
      const series = [{}];
      const columns = [data.x];
      data.series.forEach(function (s, i) {
        series.push({ label: s.name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
                      points: { show: data.x.length < 60 } });
        columns.push(s[metric]);
      });
      const width = Math.max(320, el.clientWidth || 440);
      const opts = {
        width: width,
        height: 200,
        series: series,
        // The time axis spans the range asked for, however few buckets have runs.
        scales: { x: { time: true, range: [data.from, data.to] } },
        axes: [{}, { size: 70, values: function (u, ticks) { return ticks.map(tick); } }],
      };
      const plot = new uPlot(opts, columns, el);
      el.dataset.points = String(data.x.length);
      el.plot = plot;
    });
    container.dataset.drawn = "true";
  }

  function init() {
    document.querySelectorAll("[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
