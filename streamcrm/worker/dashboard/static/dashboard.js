// The live dashboard: polls GET /api/overview (and GET /api/marketing for the campaign and
// uplift tables) and redraws its charts in place.
"use strict";

(() => {
  const S = streamcrm;
  const POLL_MS = 2500;
  const RISK_COLOURS = [
    "#1a9850", "#66bd63", "#a6d96a", "#d9ef8b", "#fee08b",
    "#fdae61", "#f46d43", "#e34a33", "#d73027", "#a50026",
  ];

  function timeAxis() {
    return {
      type: "linear",
      ticks: { callback: (value) => S.fmtClock(value), maxTicksLimit: 6, maxRotation: 0 },
      grid: { display: false },
    };
  }

  function lineChart(canvasId, label, colour) {
    return new Chart(document.getElementById(canvasId), {
      type: "line",
      data: { datasets: [{ label, data: [], borderColor: colour, backgroundColor: colour + "33",
        fill: true, pointRadius: 0, borderWidth: 2, tension: 0.25 }] },
      options: {
        parsing: false,
        normalized: true,
        scales: { x: timeAxis(), y: { beginAtZero: true, title: { display: true, text: label } } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { title: (items) => S.fmtClock(items[0].parsed.x) } },
        },
        interaction: { mode: "nearest", axis: "x", intersect: false },
      },
    });
  }

  function riskChart() {
    return new Chart(document.getElementById("risk-chart"), {
      type: "bar",
      data: { labels: [], datasets: [{ label: "scores", data: [], backgroundColor: RISK_COLOURS }] },
      options: {
        scales: {
          x: { title: { display: true, text: "churn probability" }, grid: { display: false } },
          y: { beginAtZero: true, title: { display: true, text: "recent scores" }, ticks: { precision: 0 } },
        },
        plugins: { legend: { display: false } },
      },
    });
  }

  function sharesChart() {
    return new Chart(document.getElementById("shares-chart"), {
      type: "doughnut",
      data: { labels: [], datasets: [{ label: "share", data: [], backgroundColor: [] }] },
      options: {
        plugins: {
          legend: { position: "right" },
          tooltip: { callbacks: { label: (item) => ` ${item.label}: ${item.parsed.toFixed(1)}%` } },
        },
      },
    });
  }

  function segmentMap() {
    return new Chart(document.getElementById("segment-map"), {
      type: "scatter",
      data: { datasets: [] },
      options: {
        parsing: false,
        scales: {
          x: { title: { display: true, text: "recency (days since last purchase)" }, beginAtZero: true },
          y: { title: { display: true, text: "monetary (net revenue)" }, beginAtZero: true },
        },
        plugins: {
          tooltip: {
            callbacks: {
              label: (item) => {
                const p = item.raw;
                return ` ${p.customer_id}: ${p.x.toFixed(0)} days, ${S.fmtMoney(p.y)}, ` +
                  `churn ${S.fmtPercent(p.churn_probability)}`;
              },
            },
          },
        },
        onClick: (_event, elements, chart) => {
          if (!elements.length) return;
          const { datasetIndex, index } = elements[0];
          const point = chart.data.datasets[datasetIndex].data[index];
          window.location.href = S.customerHref(point.customer_id);
        },
      },
    });
  }

  function series(points, field) {
    return points
      .map((p) => ({ x: Date.parse(p.at), y: p[field] }))
      .filter((p) => !Number.isNaN(p.x) && p.y !== null && p.y !== undefined);
  }

  function riskLabels(edges) {
    const labels = [];
    for (let i = 0; i + 1 < edges.length; i += 1) {
      labels.push(`${Math.round(edges[i] * 100)}–${Math.round(edges[i + 1] * 100)}%`);
    }
    return labels;
  }

  function sum(values) {
    return values.reduce((total, v) => total + (Number(v) || 0), 0);
  }

  function renderFigures(overview) {
    const throughput = overview.throughput || [];
    const latest = throughput.length ? throughput[throughput.length - 1].events_per_s : null;
    const rate = document.getElementById("throughput-rate");
    rate.textContent = S.fmtRate(latest);
    rate.dataset.value = latest === null ? "" : String(latest);

    const lag = overview.lag || [];
    const lagNow = lag.length ? lag[lag.length - 1].lag : null;
    S.setText("lag-now", S.fmtInt(lagNow));
    S.setText("scored", S.fmtInt((overview.outcomes || {}).scored));
    S.setText("dead-letters", S.fmtInt(sum(Object.values(overview.dead_letters || {}))));
    S.setText("records-out", S.fmtInt(sum(Object.values(overview.records_out || {}))));
    S.setText("alert-count", S.fmtInt((overview.alerts || []).length));
    S.setText("worker", overview.worker || "–");
    S.setText("generated-at", S.fmtDateTime(overview.generated_at));

    const model = overview.model || {};
    S.setText("model-version", model.version || "–");
    S.setText("model-labelled", S.fmtInt(model.labelled_examples));
    S.setText("model-auc", S.fmtNumber(model.roc_auc, 3));
    S.setText("model-log-loss", S.fmtNumber(model.log_loss, 3));
    S.setText("model-brier", S.fmtNumber(model.brier, 3));
    S.setText("model-drifts", S.fmtInt(model.drifts_detected));
  }

  function renderTables(overview) {
    S.fillTable(
      document.getElementById("partitions"),
      overview.partitions || [],
      (p) => [p.topic, String(p.partition), S.fmtInt(p.events_in), S.fmtInt(p.lag)],
      "no partitions assigned yet",
      4,
    );
    S.fillTable(
      document.getElementById("at-risk"),
      overview.at_risk || [],
      (c) => {
        const customer = document.createElement("a");
        customer.href = S.customerHref(c.customer_id);
        customer.textContent = c.customer_id;
        let scored = "at an event";
        if (c.quiet) {
          scored = "quiet: re-scored as time passed";
          if (c.recency_days != null && c.usual_gap_days) {
            scored += ` (${(c.recency_days / c.usual_gap_days).toFixed(1)}x their usual gap)`;
          }
        }
        const recency = c.recency_days == null ? "–" : c.recency_days.toFixed(0);
        return [customer, c.churn_probability.toFixed(2), c.segment_name, recency, scored];
      },
      "no scores yet",
      5,
    );
    S.fillTable(
      document.getElementById("alerts"),
      overview.alerts || [],
      (a) => {
        const severity = document.createElement("span");
        severity.className = `severity ${a.severity}`;
        severity.textContent = a.severity;
        let customer = "model";
        if (a.customer_id) {
          customer = document.createElement("a");
          customer.href = S.customerHref(a.customer_id);
          customer.textContent = a.customer_id;
        }
        return [S.fmtDateTime(a.raised_at), severity, a.kind.replace(/_/g, " "), customer, a.message];
      },
      "no alerts yet",
      5,
    );
  }

  const money = new Intl.NumberFormat("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  // A signed difference of two rates in percentage points ("+4.2").
  function fmtPoints(value) {
    if (value === null || value === undefined) return "–";
    const points = (Number(value) * 100).toFixed(1);
    return value > 0 ? `+${points}` : points;
  }

  // Right-align the given columns of a table body (fillTable only aligns plain numbers).
  function alignColumns(tbody, columns) {
    for (const row of tbody.rows) {
      if (row.cells.length === 1) continue; // the "nothing yet" row
      for (const index of columns) row.cells[index].classList.add("num");
    }
  }

  function renderMarketing(marketing) {
    S.setText("marketing-computed-at", S.fmtDateTime(marketing.computed_at));
    const notYet = marketing.computed_at ? null : "not computed yet: waiting for the first metrics tick";

    // One row per arm; the campaign and its decision on its first arm's row.
    const arms = [];
    for (const campaign of marketing.campaigns || []) {
      campaign.arms.forEach((arm, index) => arms.push({ campaign, arm, first: index === 0 }));
    }
    const campaigns = document.getElementById("campaigns");
    S.fillTable(
      campaigns,
      arms,
      ({ campaign, arm, first }) => {
        const name = document.createElement("span");
        name.textContent = arm.arm;
        if (arm.arm === campaign.leader) {
          const mark = document.createElement("strong");
          mark.textContent = campaign.stop ? " (chosen)" : " (leader)";
          name.append(mark);
        }
        let decision = "";
        if (first) {
          decision = document.createElement("span");
          decision.className = campaign.stop ? "decision stop" : "decision";
          decision.textContent = campaign.decision;
        }
        const [low, high] = arm.conversion_interval;
        return [
          first ? campaign.campaign_id : "",
          name,
          S.fmtInt(arm.touches),
          S.fmtInt(arm.conversions),
          S.fmtPercent(arm.conversion_rate),
          `${S.fmtPercent(low)} – ${S.fmtPercent(high)}`,
          money.format(arm.effect),
          arm.roi === null ? "–" : `${arm.roi > 0 ? "+" : ""}${S.fmtInt(arm.roi * 100)}%`,
          S.fmtPercent(arm.probability_best),
          S.fmtNumber(arm.expected_loss, 4),
          decision,
        ];
      },
      notYet || "no campaign has a touch yet",
      11,
    );
    alignColumns(campaigns, [2, 3, 4, 5, 6, 7, 8, 9]);

    const uplift = document.getElementById("uplift");
    S.fillTable(
      uplift,
      marketing.uplift || [],
      (u) => {
        const [low, high] = u.uplift_interval;
        return [
          u.kind.replace(/_/g, " "),
          u.segment ? S.segmentLabel(u.segment) : "all segments",
          `${S.fmtInt(u.acted_retained)} of ${S.fmtInt(u.acted_alerts)}`,
          S.fmtPercent(u.acted_rate),
          `${S.fmtInt(u.control_retained)} of ${S.fmtInt(u.control_alerts)}`,
          S.fmtPercent(u.control_rate),
          `${fmtPoints(u.uplift)} pp`,
          `${fmtPoints(low)} – ${fmtPoints(high)} pp`,
          S.fmtPercent(u.probability_positive),
        ];
      },
      notYet || "no alert's churn window has closed yet",
      9,
    );
    alignColumns(uplift, [2, 3, 4, 5, 6, 7, 8]);
  }

  function renderCharts(charts, overview) {
    for (const [chart, points, field] of [
      [charts.throughput, overview.throughput, "events_per_s"],
      [charts.lag, overview.lag, "lag"],
    ]) {
      chart.data.datasets[0].data = series(points || [], field);
      S.fitTimeAxis(chart, chart.data.datasets[0].data);
      chart.update("none");
    }

    const risk = overview.churn_risk || { edges: [], counts: [] };
    charts.risk.data.labels = riskLabels(risk.edges || []);
    charts.risk.data.datasets[0].data = risk.counts || [];
    charts.risk.update("none");

    const segments = overview.segments || { shares: {}, points: [] };
    const names = S.segmentOrder(Object.keys(segments.shares || {}));
    charts.shares.data.labels = names.map(S.segmentLabel);
    charts.shares.data.datasets[0].data = names.map((n) => 100 * segments.shares[n]);
    charts.shares.data.datasets[0].backgroundColor = names.map(S.segmentColour);
    charts.shares.update("none");

    // One scatter dataset per segment, kept (and so keeping its legend toggle) across refreshes.
    const bySegment = new Map();
    for (const p of segments.points || []) {
      if (p.recency_days === null || p.recency_days === undefined) continue;
      if (!bySegment.has(p.segment_name)) bySegment.set(p.segment_name, []);
      bySegment.get(p.segment_name).push({
        x: p.recency_days, y: p.monetary, customer_id: p.customer_id,
        churn_probability: p.churn_probability,
      });
    }
    const order = S.segmentOrder([...bySegment.keys()]);
    const datasets = charts.map.data.datasets;
    const kept = new Map(datasets.map((d) => [d.segment, d]));
    charts.map.data.datasets = order.map((name) => {
      const dataset = kept.get(name) || {
        segment: name, label: S.segmentLabel(name), backgroundColor: S.segmentColour(name) + "cc",
        borderColor: S.segmentColour(name), pointRadius: 3, pointHoverRadius: 6,
      };
      dataset.data = bySegment.get(name);
      return dataset;
    });
    charts.map.update("none");
  }

  function start() {
    S.chartDefaults();
    const charts = {
      throughput: lineChart("throughput-chart", "events/s", "#3b6fd8"),
      lag: lineChart("lag-chart", "messages behind", "#e6772e"),
      risk: riskChart(),
      shares: sharesChart(),
      map: segmentMap(),
    };
    document.body.dataset.charts = "ready";

    async function poll() {
      try {
        const overview = await S.fetchJson("/api/overview");
        renderFigures(overview);
        renderCharts(charts, overview);
        renderTables(overview);
        S.setConnection(true, "live");
        document.body.dataset.refreshed = String(Date.now());
      } catch (error) {
        S.setConnection(false, `cannot reach the worker (${error.message}); retrying`);
      }
      try {
        renderMarketing(await S.fetchJson("/api/marketing"));
      } catch (error) {
        S.setText("marketing-computed-at", `unreadable (${error.message})`);
      }
      window.setTimeout(poll, POLL_MS);
    }
    poll();
  }

  document.getElementById("customer-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = document.getElementById("customer-id").value.trim();
    if (id) window.location.href = S.customerHref(id);
  });

  start();
})();
