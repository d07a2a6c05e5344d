// Talking to the worker: the same HTTP API every client uses, with the same bearer tokens.
// Tokens live in this tab's session storage and travel only in Authorization headers (the event
// stream is read with fetch for that reason: EventSource cannot send headers).

const READ_KEY = "trust-streams.read-token";
const ADMIN_KEY = "trust-streams.admin-token";

export const tokens = {
  get read() {
    return sessionStorage.getItem(READ_KEY) || "";
  },
  get admin() {
    return sessionStorage.getItem(ADMIN_KEY) || "";
  },
  // A token left empty is kept as it was.
  set(read, admin) {
    if (read) sessionStorage.setItem(READ_KEY, read);
    if (admin) sessionStorage.setItem(ADMIN_KEY, admin);
  },
  forget() {
    sessionStorage.removeItem(READ_KEY);
    sessionStorage.removeItem(ADMIN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function bearer(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// The admin token reads too, so an operator who gave only that one can use the page.
function readHeaders() {
  return bearer(tokens.read || tokens.admin);
}

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : response.statusText;
    throw new ApiError(response.status, message || `HTTP ${response.status}`);
  }
  return body;
}

export async function getJson(path) {
  const response = await fetch(path, {
    headers: { Accept: "application/json", ...readHeaders() },
    cache: "no-store",
  });
  return answer(response);
}

export function agentPath(did, what) {
  return `/agents/${encodeURIComponent(did)}/${what}`;
}

export async function reinstate(did, reason) {
  const response = await fetch(agentPath(did, "reinstate"), {
    method: "POST",
    headers: { "Content-Type": "application/json", ...bearer(tokens.admin) },
    body: JSON.stringify({ reason, requested_by: "dashboard" }),
    cache: "no-store",
  });
  return answer(response);
}

// Follows /events until the stream ends (the worker stopped, or dropped this page for being
// slow), calling onEvent(name, data) for each server-sent event. Throws ApiError when refused.
export async function followEvents(onEvent, signal) {
  const response = await fetch("/events", {
    headers: { Accept: "text/event-stream", ...readHeaders() },
    cache: "no-store",
    signal,
  });
  if (!response.ok) {
    await answer(response);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block, onEvent);
    }
  }
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment: keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length) onEvent(name, data.join("\n"));
}
