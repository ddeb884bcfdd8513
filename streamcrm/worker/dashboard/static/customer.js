// One customer's page: GET /customers/{id}, refreshed every few seconds.
"use strict";

(() => {
  const S = streamcrm;
  const REFRESH_MS = 5000;

  // The id comes from ?id=... or from /dashboard/customers/{id}.
  function requestedId() {
    const fromQuery = new URLSearchParams(window.location.search).get("id");
    if (fromQuery) return fromQuery.trim();
    const match = window.location.pathname.match(/\/dashboard\/customers\/([^/]+)\/?$/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function showMessage(text) {
    const message = document.getElementById("message");
    message.textContent = text;
    message.hidden = false;
    document.getElementById("customer").hidden = true;
  }

  function fillPairs(dl, pairs) {
    dl.replaceChildren();
    for (const [label, value] of pairs) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dl.append(dt, dd);
    }
  }

  function cents(value, currency) {
    return S.fmtMoney(value === null || value === undefined ? null : value / 100, currency);
  }

  function dateOf(iso) {
    return iso ? S.fmtDateTime(iso).slice(0, 10) : "–";
  }

  function renderScore(score) {
    const churn = document.getElementById("churn-probability");
    churn.textContent = S.fmtPercent(score.churn_probability);
    churn.dataset.value = String(score.churn_probability);
    const segment = document.getElementById("segment-name");
    segment.textContent = S.segmentLabel(score.segment_name);
    segment.dataset.value = score.segment_name;
    segment.style.setProperty("--segment-colour", S.segmentColour(score.segment_name));
    S.setText("health", S.fmtNumber(score.health, 0));
    S.setText("clv-discounted", S.fmtMoney(score.clv_discounted, score.currency));
    S.setText("satisfaction-recent", S.fmtNumber(score.satisfaction_recent, 2));
    S.setText("loyalty", S.fmtNumber(score.loyalty, 2));
    S.setText("as-of", S.fmtDateTime(score.as_of));
    S.setText("score-model", score.model_version);

    const rfm = `${score.rfm_recency}${score.rfm_frequency}${score.rfm_monetary}`;
    fillPairs(document.getElementById("scores"), [
      ["Cancelled", score.cancelled ? "yes" : "no"],
      ["Customer value (per year)", S.fmtMoney(score.customer_value, score.currency)],
      ["CLV, simple", S.fmtMoney(score.clv_simple, score.currency)],
      ["CLV, discounted", S.fmtMoney(score.clv_discounted, score.currency)],
      ["CLV, expected (repeat buying)", S.fmtMoney(score.clv_expected, score.currency)],
      ["CLV / acquisition cost", S.fmtNumber(score.clv_to_acquisition_cost, 2)],
      ["P(alive)", S.fmtPercent(score.probability_alive)],
      ["Expected purchases", S.fmtNumber(score.expected_purchases, 2)],
      ["Satisfaction, mean", S.fmtNumber(score.satisfaction_mean, 2)],
      ["Satisfaction, population mean", S.fmtNumber(score.population_satisfaction_mean, 2)],
      ["CSAT mean", S.fmtNumber(score.csat_mean, 2)],
      ["NPS (−100 to 100)", S.fmtNumber(score.nps, 0)],
      ["RFM code (1–5 each)", rfm],
      ["Recency", score.recency_days === null ? "–" : `${score.recency_days.toFixed(0)} days`],
      ["Orders", S.fmtInt(score.frequency)],
      ["Monetary", S.fmtMoney(score.monetary, score.currency)],
      ["Open tickets", S.fmtInt(score.open_tickets)],
      ["Escalations", S.fmtInt(score.escalations)],
      ["SLA breaches", S.fmtInt(score.sla_breaches)],
      ["Segment distance", S.fmtNumber(score.segment_distance, 3)],
    ]);
  }

  function renderState(state, currency) {
    const tickets = Object.values(state.tickets || {});
    const open = tickets.filter((t) => t.opened_at && !t.resolved_at).length;
    const ratings = (state.csat_count || 0) + (state.nps_promoters || 0) +
      (state.nps_passives || 0) + (state.nps_detractors || 0);
    fillPairs(document.getElementById("state"), [
      ["First seen", dateOf(state.first_seen_at)],
      ["Last event", dateOf(state.last_event_at)],
      ["Events applied", S.fmtInt(state.events_applied)],
      ["First purchase", dateOf(state.first_purchase_at)],
      ["Last purchase", dateOf(state.last_purchase_at)],
      ["Orders", S.fmtInt(state.order_count)],
      ["Gross revenue", cents(state.gross_cents, currency)],
      ["Refunds", `${S.fmtInt(state.refund_count)} (${cents(state.refunded_cents, currency)})`],
      ["Ratings", S.fmtInt(ratings)],
      ["Tickets tracked (open)", `${S.fmtInt(tickets.length)} (${S.fmtInt(open)})`],
      ["Cancelled at", state.cancelled_at ? dateOf(state.cancelled_at) : "–"],
    ]);
  }

  function historyChart() {
    return new Chart(document.getElementById("history-chart"), {
      type: "line",
      data: {
        datasets: [
          { label: "churn probability (%)", yAxisID: "y", borderColor: "#d73027",
            backgroundColor: "#d73027", data: [], pointRadius: 2, tension: 0.2 },
          { label: "health (0–100)", yAxisID: "y", borderColor: "#1b9e77",
            backgroundColor: "#1b9e77", data: [], pointRadius: 2, tension: 0.2 },
          { label: "CLV, discounted", yAxisID: "clv", borderColor: "#3b6fd8",
            backgroundColor: "#3b6fd8", data: [], pointRadius: 2, tension: 0.2, borderDash: [5, 4] },
        ],
      },
      options: {
        parsing: false,
        scales: {
          x: { type: "linear", ticks: { callback: (v) => S.fmtDateTime(new Date(v).toISOString()).slice(0, 10),
            maxTicksLimit: 6, maxRotation: 0 } },
          y: { min: 0, max: 100, position: "left", title: { display: true, text: "% / health" } },
          clv: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false },
            title: { display: true, text: "CLV" } },
        },
        plugins: {
          tooltip: {
            callbacks: {
              title: (items) => S.fmtDateTime(new Date(items[0].parsed.x).toISOString()),
              afterBody: (items) => `segment: ${items[0].raw.segment_name}`,
            },
          },
        },
        interaction: { mode: "index", intersect: false },
      },
    });
  }

  function driversChart() {
    return new Chart(document.getElementById("drivers-chart"), {
      type: "bar",
      data: { labels: [], datasets: [{ label: "log-odds", data: [], backgroundColor: [] }] },
      options: {
        indexAxis: "y",
        scales: { x: { title: { display: true, text: "log-odds contribution" } } },
        plugins: { legend: { display: false } },
      },
    });
  }

  function renderHistory(chart, history) {
    const points = history.map((h) => ({ at: Date.parse(h.as_of), ...h }));
    const [churn, health, clv] = chart.data.datasets;
    churn.data = points.map((p) => ({ x: p.at, y: 100 * p.churn_probability, segment_name: p.segment_name }));
    health.data = points.map((p) => ({ x: p.at, y: p.health, segment_name: p.segment_name }));
    clv.data = points.map((p) => ({ x: p.at, y: p.clv_discounted, segment_name: p.segment_name }));
    S.fitTimeAxis(chart, churn.data);
    chart.update("none");
    document.getElementById("history-empty").hidden = history.length > 0;
    chart.canvas.parentElement.hidden = history.length === 0;
  }

  function renderDrivers(chart, drivers) {
    const sorted = [...drivers].sort((a, b) => Math.abs(b.log_odds) - Math.abs(a.log_odds));
    chart.data.labels = sorted.map((d) => d.feature.replace(/_/g, " "));
    chart.data.datasets[0].data = sorted.map((d) => d.log_odds);
    chart.data.datasets[0].backgroundColor = sorted.map((d) => (d.log_odds > 0 ? "#d73027" : "#1a9850"));
    chart.update("none");
    document.getElementById("drivers-empty").hidden = drivers.length > 0;
    chart.canvas.parentElement.hidden = drivers.length === 0;
  }

  function start() {
    const id = requestedId();
    document.getElementById("customer-id").value = id;
    document.getElementById("customer-search").addEventListener("submit", (event) => {
      event.preventDefault();
      const wanted = document.getElementById("customer-id").value.trim();
      if (wanted) window.location.href = S.customerHref(wanted);
    });
    if (!id) {
      S.setText("customer-title", "–");
      S.setConnection(false, "no customer chosen");
      showMessage("Type a customer id above to open that customer.");
      return;
    }
    S.setText("customer-title", id);
    document.title = `streamcrm · ${id}`;
    const api = `/customers/${encodeURIComponent(id)}`;
    document.getElementById("api-link").href = api;
    S.chartDefaults();
    const charts = { history: historyChart(), drivers: driversChart() };

    async function refresh() {
      try {
        const body = await S.fetchJson(api);
        document.getElementById("message").hidden = true;
        document.getElementById("customer").hidden = false;
        const currency = body.score ? body.score.currency : "";
        if (body.score) {
          renderScore(body.score);
          renderDrivers(charts.drivers, body.score.churn_drivers || []);
        } else {
          showMessage(`Customer ${id} is known, but has no score yet.`);
          document.getElementById("customer").hidden = false;
        }
        renderState(body.state || {}, currency);
        renderHistory(charts.history, body.history || []);
        S.setConnection(true, "live");
        document.body.dataset.loaded = "customer";
      } catch (error) {
        if (error instanceof S.HttpError && error.status === 404) {
          S.setConnection(false, "not found");
          showMessage(`No customer with id “${id}” is known to this system. ` +
            "Check the id (ids are case-sensitive, and pseudonymised when that is on).");
          document.body.dataset.loaded = "not-found";
          return; // An unknown id stays unknown until it is asked for again.
        }
        S.setConnection(false, `cannot reach the worker (${error.message}); retrying`);
      }
      window.setTimeout(refresh, REFRESH_MS);
    }
    refresh();
  }

  start();
})();
