// Building the page's lists. Text from the wire (DIDs, sources, reasons) only ever goes in
// through textContent, never as markup.

import { DIMENSION_LABELS, tierOf, timeOf } from "./chart.js";

export function el(tag, options = {}, children = []) {
  const element = document.createElement(tag);
  if (options.className) element.className = options.className;
  if (options.text !== undefined) element.textContent = String(options.text);
  for (const [key, value] of Object.entries(options.data || {})) {
    element.dataset[key] = String(value);
  }
  if (options.title) element.title = options.title;
  for (const child of children) element.appendChild(child);
  return element;
}

export function show(element, visible) {
  element.hidden = !visible;
}

// A DID that opens the agent's view when clicked.
export function agentLink(did) {
  const link = el("a", { className: "did", text: did, title: did });
  link.href = `#agent=${encodeURIComponent(did)}`;
  return link;
}

function cell(content, className) {
  const td = el("td", { className });
  if (content instanceof Node) td.appendChild(content);
  else td.textContent = String(content);
  return td;
}

function tierTag(score, name) {
  const tier = name ? { label: name.replace("_", " "), name } : tierOf(score);
  return el("span", { className: `tier tier-${tier.name}`, text: tier.label });
}

export function renderAtRisk(table, empty, agents) {
  const rows = agents.map((a) =>
    el("tr", { data: { did: a.agent_did } }, [
      cell(agentLink(a.agent_did)),
      cell(a.total_score, "num"),
      cell(tierTag(a.total_score, a.tier)),
    ]),
  );
  table.tBodies[0].replaceChildren(...rows);
  show(table, rows.length > 0);
  show(empty, rows.length === 0);
}

export function renderUpdates(table, empty, updates) {
  const rows = updates.map((u) => {
    const change = u.score_change > 0 ? `+${u.score_change}` : String(u.score_change);
    const direction = u.score_change > 0 ? "up" : u.score_change < 0 ? "down" : "flat";
    return el("tr", { data: { did: u.agent_did, score: u.total_score } }, [
      cell(timeOf(u.computed_at), "time"),
      cell(agentLink(u.agent_did)),
      cell(u.total_score, "num"),
      cell(change, `num change ${direction}`),
    ]);
  });
  table.tBodies[0].replaceChildren(...rows);
  show(table, rows.length > 0);
  show(empty, rows.length === 0);
}

export function renderRevocations(list, empty, revocations) {
  const items = revocations.map((r) => {
    const head = el("div", { className: "event-head" }, [
      el("span", { className: "time", text: timeOf(r.revoked_at) }),
      agentLink(r.agent_did),
      el("span", { className: "score", text: `${r.total_score} < ${r.threshold}` }),
    ]);
    if (r.reinstated) {
      head.appendChild(el("span", { className: "badge ok", text: "reinstated" }));
    }
    const reason = el("div", { className: "reason", text: r.reason });
    return el("li", { data: { did: r.agent_did, revocation: r.revocation_id } }, [head, reason]);
  });
  list.replaceChildren(...items);
  show(empty, items.length === 0);
}

export function renderSignals(table, signals) {
  const rows = signals
    .slice()
    .reverse()
    .map((s) =>
      el("tr", {}, [
        cell(timeOf(s.timestamp), "time"),
        cell(DIMENSION_LABELS[s.dimension] || s.dimension),
        cell(s.value.toFixed(2), `num ${s.value < 0.3 ? "critical" : ""}`),
        cell(s.source, "source"),
      ]),
    );
  table.tBodies[0].replaceChildren(...rows);
}
