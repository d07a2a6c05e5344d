// The dashboard: the fleet at a glance, one agent in detail, and live updates from /events.

import { ApiError, agentPath, followEvents, getJson, reinstate, tokens } from "./api.js";
import { dimensionBars, historyChart, tierBars, timeOf, tierOf } from "./chart.js";
import { el, renderAtRisk, renderRevocations, renderSignals, renderUpdates, show } from "./views.js";

const $ = (id) => document.getElementById(id);
const MAX_UPDATES = 12;
const MAX_REVOCATIONS = 15;
const FLEET_EVERY_MS = 15000;

const state = {
  updates: [],
  revocations: new Map(), // revocation_id -> revocation (with .reinstated)
  lifted: new Set(), // revocation ids reinstated, possibly seen before their revocation
  atRisk: new Map(), // did -> summary
  agent: null, // the DID shown
  config: null,
  stream: null, // AbortController of the event stream
  timers: {},
};

// -- tokens and refusals ----------------------------------------------------------------------

function refused(error) {
  if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) return false;
  $("auth-message").textContent = `The worker refused (${error.status}): ${error.message}`;
  show($("auth-message"), true);
  show($("auth"), true);
  return true;
}

function setupTokens() {
  $("tokens-toggle").addEventListener("click", () => show($("auth"), $("auth").hidden));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    tokens.set($("read-token").value.trim(), $("admin-token").value.trim());
    $("read-token").value = "";
    $("admin-token").value = "";
    show($("auth-message"), false);
    show($("auth"), false);
    restart();
  });
  $("tokens-forget").addEventListener("click", () => {
    tokens.forget();
    restart();
  });
}

function showTokensKept() {
  $("read-token").placeholder = tokens.read ? "kept (type to replace)" : "";
  $("admin-token").placeholder = tokens.admin ? "kept (type to replace)" : "";
}

// -- the fleet --------------------------------------------------------------------------------

async function refreshFleet() {
  try {
    const [report, risky] = await Promise.all([
      getJson("/health-report?limit=1"),
      getJson("/agents/at-risk?limit=50"),
    ]);
    renderFleet(report);
    state.atRisk = new Map(risky.agents.map((a) => [a.agent_did, a]));
    renderRiskList();
  } catch (error) {
    if (!refused(error)) $("counted-at").textContent = `Fleet not available: ${error.message}`;
  }
}

function renderFleet(report) {
  const number = (value) => (typeof value === "number" ? String(value) : "–");
  $("total-agents").textContent = number(report.total_agents);
  $("at-risk-agents").textContent = number(report.at_risk_agents);
  $("revoked-agents").textContent = number(report.revoked_agents);
  const counts = {};
  for (const name of ["verified_partner", "trusted", "standard", "probationary", "untrusted"]) {
    counts[name] = report[`${name}_agents`];
  }
  tierBars($("tier-chart"), counts);
  const parts = [];
  parts.push(report.counted_at ? `counted at ${timeOf(report.counted_at)}` : "still counting");
  if (report.partial) parts.push(`partial: ${report.missing_workers.join(", ") || "partitions moving"}`);
  $("counted-at").textContent = parts.join(" · ");
}

function renderRiskList() {
  const agents = [...state.atRisk.values()].sort((a, b) => a.total_score - b.total_score);
  renderAtRisk($("at-risk"), $("at-risk-empty"), agents.slice(0, 20));
}

function soon(name, action, delay) {
  if (state.timers[name]) return;
  state.timers[name] = setTimeout(() => {
    state.timers[name] = null;
    action();
  }, delay);
}

// -- live events ------------------------------------------------------------------------------

function setStatus(name, detail) {
  const pill = $("stream-status");
  pill.dataset.state = name;
  pill.textContent = name;
  pill.title = detail || "";
}

function onScore(update) {
  state.updates.unshift(update);
  state.updates.length = Math.min(state.updates.length, MAX_UPDATES);
  renderUpdates($("updates"), $("updates-empty"), state.updates);
  if (update.at_risk && !update.revoked) {
    state.atRisk.set(update.agent_did, { ...update, tier: tierOf(update.total_score).name });
  } else {
    state.atRisk.delete(update.agent_did);
  }
  renderRiskList();
  if (update.agent_did === state.agent) soon("agent", () => loadAgent(state.agent, true), 300);
}

function onRevocationTopic(record) {
  if (record.type === "reinstated") {
    state.lifted.add(record.lifted_revocation_id);
    const lifted = state.revocations.get(record.lifted_revocation_id);
    if (lifted) lifted.reinstated = true;
  } else if (record.revocation_id) {
    record.reinstated = state.lifted.has(record.revocation_id);
    state.revocations.set(record.revocation_id, record);
    state.atRisk.delete(record.agent_did);
    renderRiskList();
  }
  const newest = [...state.revocations.values()]
    .sort((a, b) => String(b.revoked_at).localeCompare(String(a.revoked_at)))
    .slice(0, MAX_REVOCATIONS);
  state.revocations = new Map(newest.map((r) => [r.revocation_id, r]));
  renderRevocations($("revocations"), $("revocations-empty"), newest);
  soon("fleet", refreshFleet, 1500);
  if (record.agent_did === state.agent) soon("agent", () => loadAgent(state.agent, true), 300);
}

function onEvent(name, data) {
  let body;
  try {
    body = JSON.parse(data);
  } catch {
    return; // not JSON: nothing to show
  }
  if (!body || typeof body !== "object") return;
  if (name === "status") {
    setStatus(body.live ? "live" : "reconnecting", body.error);
    if (body.live) refreshFleet();
  } else if (name === "score" && typeof body.agent_did === "string") {
    onScore(body);
  } else if (name === "revocation" && typeof body.agent_did === "string") {
    onRevocationTopic(body);
  }
}

async function stream(controller) {
  let delay = 1000;
  while (!controller.signal.aborted) {
    setStatus("connecting");
    try {
      await followEvents(onEvent, controller.signal);
      delay = 1000; // ended by the worker (stopping, or this page fell behind): reconnect
    } catch (error) {
      if (controller.signal.aborted) return;
      if (refused(error)) {
        setStatus("refused", error.message);
        return;
      }
      delay = Math.min(delay * 2, 15000);
    }
    if (controller.signal.aborted) return;
    setStatus("offline", "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

function restart() {
  showTokensKept();
  if (state.stream) state.stream.abort();
  state.stream = new AbortController();
  stream(state.stream);
  refreshFleet();
  if (state.agent) loadAgent(state.agent);
}

// -- one agent --------------------------------------------------------------------------------

async function thresholds() {
  if (!state.config) state.config = await getJson("/config");
  return state.config;
}

async function loadAgent(did, quietly = false) {
  state.agent = did;
  show($("agent-empty"), false);
  if (!quietly) $("reinstate-message").textContent = "";
  try {
    const [why, config] = await Promise.all([getJson(agentPath(did, "explanation")), thresholds()]);
    if (state.agent !== did) return;
    renderAgent(why, config);
    show($("agent-error"), false);
  } catch (error) {
    if (state.agent !== did) return;
    show($("agent"), false);
    if (!refused(error)) {
      $("agent-error").textContent = error.status === 404 ? `Unknown agent ${did}` : error.message;
      show($("agent-error"), true);
    }
  }
}

function renderAgent(why, config) {
  $("agent-did").textContent = why.agent_did;
  $("agent-score").textContent = String(why.total_score);
  const tier = tierOf(why.total_score);
  const tierTag = $("agent-tier");
  tierTag.className = `tier tier-${tier.name}`;
  tierTag.textContent = tier.label;
  $("agent-trend").textContent = `trend: ${why.trend} · configuration v${why.config_version}`;
  const status = why.revoked
    ? ["revoked", "danger"]
    : why.reinstatement
      ? ["reinstated", "ok"]
      : why.at_risk
        ? ["at risk", "warn"]
        : ["in good standing", "ok"];
  const badge = $("agent-status");
  badge.textContent = status[0];
  badge.className = `badge ${status[1]}`;

  const revocation = $("agent-revocation");
  if (why.revocation) {
    revocation.replaceChildren(
      el("strong", { text: `Revoked at ${timeOf(why.revocation.revoked_at)}: ` }),
      el("span", { className: "reason", text: why.revocation.reason }),
    );
  }
  show(revocation, Boolean(why.revocation));
  show($("reinstate-form"), why.revoked);

  const lifted = $("agent-reinstatement");
  const r = why.reinstatement;
  if (r) {
    const said = r.lifted_reason ? ` (it said: ${r.lifted_reason})` : "";
    lifted.replaceChildren(
      el("strong", { text: `Reinstated at ${timeOf(r.reinstated_at)} by ${r.requested_by}: ` }),
      el("span", { className: "reason", text: `${r.reason}${said}` }),
    );
  }
  show(lifted, Boolean(r));

  historyChart($("history-chart"), why.history, config);
  dimensionBars($("dimension-chart"), why.dimensions);
  renderSignals($("signals"), why.recent_signals);
  show($("agent"), true);
}

function setupAgent() {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const did = $("search-did").value.trim();
    if (!did) return;
    const hash = `#agent=${encodeURIComponent(did)}`;
    if (location.hash === hash) loadAgent(did); // the same agent again: read it afresh
    else location.hash = hash;
  });
  window.addEventListener("hashchange", fromHash);
  $("reinstate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = $("reinstate-message");
    const did = state.agent;
    const reason = $("reinstate-reason").value.trim();
    if (!reason) {
      message.textContent = "Say why the agent may act again.";
      return;
    }
    message.className = "meta";
    message.textContent = "Sending…";
    try {
      await reinstate(did, reason);
      message.textContent = "Accepted: the agent's worker applies it in order with its signals.";
      $("reinstate-reason").value = "";
      soon("agent", () => loadAgent(did, true), 700);
    } catch (error) {
      message.className = "meta error";
      message.textContent = `Refused (${error.status || "error"}): ${error.message}`;
    }
  });
}

function fromHash() {
  const match = /^#agent=(.+)$/.exec(location.hash);
  if (!match) return;
  const did = decodeURIComponent(match[1]);
  $("search-did").value = did;
  loadAgent(did);
}

// -- start ------------------------------------------------------------------------------------

setupTokens();
setupAgent();
renderUpdates($("updates"), $("updates-empty"), []);
renderRevocations($("revocations"), $("revocations-empty"), []);
tierBars($("tier-chart"), {});
restart();
fromHash();
setInterval(refreshFleet, FLEET_EVERY_MS);
setInterval(() => {
  state.config = null; // thresholds are a live setting
}, 60000);
