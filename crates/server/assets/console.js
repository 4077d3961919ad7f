// Prompt Registry console: the charts of a prompt's runs. Everything else
// works without script; htmx enhances the search and the "try it" form.
"use strict";

(function () {
  const COLORS = ["#0a58ca", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

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
      const plot = new uPlot({ width: width, height: 200, series: series, axes: [{}, { size: 60 }] }, columns, el);
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
