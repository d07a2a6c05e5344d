// Charts drawn as inline SVG from the API's numbers. Every label is set with textContent.

const NS = "http://www.w3.org/2000/svg";

export const TIERS = [
  { name: "verified_partner", label: "verified partner", floor: 900, color: "#137a55" },
  { name: "trusted", label: "trusted", floor: 700, color: "#3fa66b" },
  { name: "standard", label: "standard", floor: 500, color: "#4a7fd6" },
  { name: "probationary", label: "probationary", floor: 300, color: "#d99a22" },
  { name: "untrusted", label: "untrusted", floor: 0, color: "#cf3f3f" },
];

export function tierOf(score) {
  return TIERS.find((tier) => score >= tier.floor) || TIERS[TIERS.length - 1];
}

function node(tag, attrs, parent, text) {
  const element = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    element.setAttribute(key, String(value));
  }
  if (text !== undefined) element.textContent = text;
  if (parent) parent.appendChild(element);
  return element;
}

function canvas(container, width, height, label) {
  const svg = node("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width: "100%",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
  container.replaceChildren(svg);
  return svg;
}

export function timeOf(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString([], { hour12: false });
}

// Agents by tier: one row each, bar length in proportion to the largest count.
export function tierBars(container, counts) {
  const rowHeight = 26;
  const width = 420;
  const labelWidth = 118;
  const countWidth = 56;
  const svg = canvas(container, width, rowHeight * TIERS.length, "agents by tier");
  const largest = Math.max(1, ...TIERS.map((tier) => counts[tier.name] || 0));
  const span = width - labelWidth - countWidth;
  TIERS.forEach((tier, i) => {
    const count = counts[tier.name];
    const y = i * rowHeight;
    const row = node("g", { class: "tier-row", "data-tier": tier.name, "data-count": count ?? "" }, svg);
    node("text", { x: 0, y: y + 17, class: "axis-label" }, row, tier.label);
    node("rect", { x: labelWidth, y: y + 5, width: span, height: 16, rx: 3, class: "track" }, row);
    const filled = count ? Math.max(2, (span * count) / largest) : 0;
    node("rect", { x: labelWidth, y: y + 5, width: filled, height: 16, rx: 3, fill: tier.color }, row);
    node("text", { x: width, y: y + 17, "text-anchor": "end", class: "value-label" }, row,
      count === undefined ? "–" : String(count));
  });
}

// An agent's score over time: one point per recalculation, with the thresholds in force.
export function historyChart(container, history, thresholds) {
  const width = 640;
  const height = 230;
  const pad = { left: 40, right: 86, top: 10, bottom: 26 };
  const svg = canvas(container, width, height, "score history");
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const y = (score) => pad.top + plotH * (1 - score / 1000);
  for (const tick of [0, 250, 500, 750, 1000]) {
    node("line", { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: "grid" }, svg);
    node("text", { x: pad.left - 6, y: y(tick) + 4, "text-anchor": "end", class: "axis-label" }, svg,
      String(tick));
  }
  const lines = [
    ["warning", thresholds.warning_threshold],
    ["revocation", thresholds.revocation_threshold],
  ];
  for (const [name, value] of lines) {
    if (typeof value !== "number") continue;
    node("line", {
      x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value),
      class: `threshold ${name}`, "data-threshold": name,
    }, svg);
    // In the right margin, where no point is drawn.
    node("text", { x: width - pad.right + 6, y: y(value) + 4, class: `threshold-label ${name}` },
      svg, `${name} ${value}`);
  }
  if (!history.length) {
    node("text", { x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle", class: "axis-label" },
      svg, "no recalculation yet");
    return svg;
  }
  const times = history.map((entry) => new Date(entry.at).getTime());
  const first = Math.min(...times);
  const last = Math.max(...times);
  const x = (t) => (last === first ? pad.left + plotW / 2 : pad.left + (plotW * (t - first)) / (last - first));
  const points = history.map((entry, i) => [x(times[i]), y(entry.score)]);
  node("polyline", { points: points.map((p) => p.join(",")).join(" "), class: "history-line" }, svg);
  const dots = node("g", { class: "points" }, svg);
  history.forEach((entry, i) => {
    const dot = node("circle", {
      cx: points[i][0], cy: points[i][1], r: history.length > 60 ? 2.2 : 3.2,
      class: "point", fill: tierOf(entry.score).color,
      "data-score": entry.score, "data-at": entry.at,
    }, dots);
    node("title", {}, dot, `${timeOf(entry.at)}: ${entry.score}`);
  });
  node("text", { x: pad.left, y: height - 6, class: "axis-label" }, svg, timeOf(history[0].at));
  node("text", { x: width - pad.right, y: height - 6, "text-anchor": "end", class: "axis-label" }, svg,
    timeOf(history[history.length - 1].at));
  return svg;
}

export const DIMENSION_LABELS = {
  policy_compliance: "policy compliance",
  resource_efficiency: "resource efficiency",
  output_quality: "output quality",
  security_posture: "security posture",
  collaboration_health: "collaboration health",
};

// Each dimension's points of the total (score x weight x 10), against the most it could add.
export function dimensionBars(container, dimensions) {
  const entries = Object.entries(dimensions);
  const rowHeight = 34;
  const width = 640;
  const labelWidth = 150;
  const valueWidth = 250;
  const span = width - labelWidth - valueWidth;
  const svg = canvas(container, width, rowHeight * entries.length, "points per dimension");
  const most = Math.max(1, ...entries.map(([, d]) => d.weight * 1000));
  entries.forEach(([name, d], i) => {
    const y = i * rowHeight;
    const row = node("g", { class: "dimension-row", "data-dimension": name, "data-points": d.contribution }, svg);
    node("text", { x: 0, y: y + 21, class: "axis-label" }, row, DIMENSION_LABELS[name] || name);
    const full = (span * d.weight * 1000) / most;
    node("rect", { x: labelWidth, y: y + 8, width: full, height: 18, rx: 3, class: "track" }, row);
    const filled = full * Math.min(1, d.score / 100);
    node("rect", { x: labelWidth, y: y + 8, width: filled, height: 18, rx: 3, fill: tierOf(d.score * 10).color }, row);
    node("text", { x: labelWidth + span + 12, y: y + 21, class: "value-label" }, row,
      `${d.contribution.toFixed(1)} / ${Math.round(d.weight * 1000)} pts`);
    node("text", { x: width, y: y + 21, "text-anchor": "end", class: "axis-label" }, row,
      `score ${d.score.toFixed(0)} · ${d.signal_count} signals`);
  });
}
