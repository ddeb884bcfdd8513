// Helpers shared by the dashboard's pages: fetching JSON, formatting figures, colours.
// Plain browser JavaScript, no build step; every page loads this before its own script.
"use strict";

const streamcrm = (() => {
  // Fixed colours for the segments the model names (streamcrm.models.segments.SEGMENT_NAMES),
  // so a segment keeps its colour across charts and refreshes; other names get the spares.
  const SEGMENT_COLOURS = {
    champions: "#1b9e77",
    loyal: "#3b6fd8",
    at_risk: "#e6772e",
    hibernating: "#8c6bb1",
  };
  const SPARE_COLOURS = ["#d62f6a", "#66a61e", "#a6761d", "#7f7f7f", "#17becf", "#bcbd22"];
  const spareAssigned = new Map();

  function segmentColour(name) {
    if (SEGMENT_COLOURS[name]) return SEGMENT_COLOURS[name];
    if (!spareAssigned.has(name)) {
      spareAssigned.set(name, SPARE_COLOURS[spareAssigned.size % SPARE_COLOURS.length]);
    }
    return spareAssigned.get(name);
  }

  function segmentLabel(name) {
    return String(name).replace(/_/g, " ");
  }

  // Known segments first, in the model's order (best to worst), then the rest by name.
  function segmentOrder(names) {
    const known = Object.keys(SEGMENT_COLOURS);
    return [...names].sort((a, b) => {
      const ia = known.indexOf(a), ib = known.indexOf(b);
      if (ia !== -1 || ib !== -1) return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
      return a < b ? -1 : a > b ? 1 : 0;
    });
  }

  class HttpError extends Error {
    constructor(status, body) {
      super((body && body.error) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function fetchJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new HttpError(response.status, body);
    return body;
  }

  const integer = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });

  function missing(value) {
    return value === null || value === undefined || Number.isNaN(value);
  }

  function fmtInt(value) {
    return missing(value) ? "–" : integer.format(value);
  }

  function fmtNumber(value, digits = 2) {
    return missing(value) ? "–" : Number(value).toFixed(digits);
  }

  function fmtRate(value) {
    if (missing(value)) return "–";
    return value >= 100 ? integer.format(value) : Number(value).toFixed(1);
  }

  // A probability in [0, 1] as a percentage with one decimal ("37.2%").
  function fmtPercent(value) {
    return missing(value) ? "–" : `${(Number(value) * 100).toFixed(1)}%`;
  }

  function fmtMoney(value, currency) {
    if (missing(value)) return "–";
    const amount = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 }).format(value);
    return currency ? `${amount} ${currency}` : amount;
  }

  function fmtDateTime(iso) {
    if (!iso) return "–";
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? String(iso) : at.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function fmtClock(ms) {
    return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
  }

  function customerHref(customerId) {
    return `/dashboard/customer?id=${encodeURIComponent(customerId)}`;
  }

  // The page's "live" / "cannot reach the worker" indicator.
  function setConnection(ok, text) {
    const element = document.getElementById("connection");
    element.textContent = text;
    element.classList.toggle("down", !ok);
  }

  // Fit a linear time axis to its data (Chart.js would round it out to "nice" values).
  function fitTimeAxis(chart, points) {
    const xs = points.map((p) => p.x);
    chart.options.scales.x.min = xs.length ? Math.min(...xs) : undefined;
    chart.options.scales.x.max = xs.length ? Math.max(...xs) : undefined;
  }

  function setText(id, text) {
    const element = document.getElementById(id);
    if (element) element.textContent = text;
  }

  // Replace a table body's rows; `cells(row)` returns one array of strings or Nodes per row.
  function fillTable(tbody, rows, cells, emptyText, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      const tr = tbody.insertRow();
      const td = tr.insertCell();
      td.colSpan = columns;
      td.className = "empty";
      td.textContent = emptyText;
      return;
    }
    for (const row of rows) {
      const tr = tbody.insertRow();
      for (const cell of cells(row)) {
        const td = tr.insertCell();
        if (cell instanceof Node) td.append(cell);
        else td.textContent = cell;
        if (typeof cell === "string" && /^[-+]?[\d.,]+%?$/.test(cell)) td.className = "num";
      }
    }
  }

  // Chart.js defaults that suit small live charts: no animation on refresh, readable fonts.
  function chartDefaults() {
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#3d4451";
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.animation = false;
  }

  return {
    HttpError, chartDefaults, customerHref, fetchJson, fillTable, fitTimeAxis, fmtClock, fmtDateTime,
    fmtInt, fmtMoney, fmtNumber, fmtPercent, fmtRate, segmentColour, segmentLabel, segmentOrder,
    setConnection, setText,
  };
})();
