// The page's only way to the server: JSON over the public API (docs/api.md), and the one
// event loop that follows the caller's event log: over Server-Sent Events (GET /api/stream,
// EventSource) where the browser and the server can, else by long polling GET /api/updates.
//
// Reconnect rules (docs/api.md, "Snapshot and reconnect rule"): the loop always passes the last event id
// it has processed (kept in localStorage per user); network errors are retried with backoff;
// on start, and after 410 events_expired, it resyncs: it reads what the log already holds,
// lets the app take the REST snapshot (which reflects all of it), and goes on from there.
// EventSource reconnects by itself after a network error (sending Last-Event-ID) but says
// nothing about why a stream was refused: when it gives up, one long poll with timeout=0
// asks the same question and gets the status and the error body, and the loop decides from
// those exactly as it does when polling.

export const POLL_TIMEOUT_SECS = 25;
const POLL_GRACE_MS = 15000;          // the held poll answers within its timeout; more means trouble
const REQUEST_TIMEOUT_MS = 20000;
const DRAIN_PAGE = 100;               // the contract's largest `limit`
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const SKEW_IGNORE_MS = 1500;          // the Date header has a resolution of one second
const TICKET_MARGIN_MS = 60000;       // a stream ticket this close to expiry is renewed first

export class ApiError extends Error {
  constructor(status, code, message, { fields = null, body = null, retryAfterMs = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;          // 0 when the server was not reached
    this.code = code;
    this.fields = fields;
    this.body = body;              // the contract's `error` object
    this.retryAfterMs = retryAfterMs;
  }

  /** Worth repeating unchanged: nothing reached the server, or it asked us to come back. */
  get retryable() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }

  /** One line for the user, with the field messages of a validation error. */
  get display() {
    if (!this.fields) return this.message;
    const parts = Object.entries(this.fields).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`);
    return `${this.message} (${parts.join("; ")})`;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

function retryAfterMs(response) {
  const value = response.headers.get("Retry-After");
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

export class Api {
  constructor() {
    this.token = localStorage.getItem("duely.token");
    this.onUnauthorized = null;    // called once per 401 on an authenticated call
    this.skewMs = 0;               // server clock minus ours
  }

  setToken(token) {
    this.token = token;
    if (token) localStorage.setItem("duely.token", token);
    else localStorage.removeItem("duely.token");
  }

  /** The server's idea of now, in ms since the epoch (deadlines are server times). */
  now() {
    return Date.now() + this.skewMs;
  }

  async request(method, path, { body, signal, timeoutMs = REQUEST_TIMEOUT_MS, auth = true } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.token) headers.Authorization = `Bearer ${this.token}`;
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; ctrl.abort(); }, timeoutMs);
    let response;
    let data = null;
    try {
      response = await fetch(path, {
        method, headers, cache: "no-store", signal: ctrl.signal,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status !== 204) data = await response.json().catch(() => null);
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new ApiError(0, "network_error", timedOut ? "The server did not answer in time." : "Cannot reach the server.");
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    this.noteServerDate(response.headers.get("Date"));
    if (response.ok) return data;
    const error = data?.error ?? {};
    const err = new ApiError(response.status, error.code ?? `http_${response.status}`,
      error.message ?? `The server answered ${response.status}.`,
      { fields: error.fields ?? null, body: error, retryAfterMs: retryAfterMs(response) });
    if (response.status === 401 && auth && this.token) this.onUnauthorized?.(err);
    throw err;
  }

  get(path, opts) { return this.request("GET", path, opts); }
  post(path, body, opts) { return this.request("POST", path, { ...opts, body }); }
  delete(path, opts) { return this.request("DELETE", path, opts); }
  put(path, body, opts) { return this.request("PUT", path, { ...opts, body }); }
  patch(path, body, opts) { return this.request("PATCH", path, { ...opts, body }); }

  /** A ticket for EventSource, which cannot send the Authorization header (cached while valid). */
  async streamTicket() {
    const t = this.ticket;
    if (t && t.token === this.token && Date.parse(t.expires_at) - Date.now() > TICKET_MARGIN_MS) return t.ticket;
    const body = await this.post("/api/stream-tickets");
    this.ticket = { ...body, token: this.token };
    return body.ticket;
  }

  forgetTicket() {
    this.ticket = null;
  }

  noteServerDate(header) {
    const at = header ? Date.parse(header) : NaN;
    if (Number.isNaN(at)) return;
    const skew = at + 500 - Date.now();
    this.skewMs = Math.abs(skew) < SKEW_IGNORE_MS ? 0 : skew;
  }
}

/**
 * Follows one user's event log for as long as the page is logged in.
 *
 * handlers.onEvent(event)       each new event, in order, exactly once (awaited)
 * handlers.onResync(backlog)    take the REST snapshot; `backlog` holds the events that were
 *                               already in the log, which the snapshot reflects (awaited)
 * handlers.onStatus(state, err) "online" | "offline" | "resyncing"
 * handlers.onUnauthorized(err)  the token stopped working; the loop has ended
 */
export class EventStream {
  constructor(api, userId, handlers, { useSse = typeof EventSource === "function" } = {}) {
    this.api = api;
    this.key = `duely.lastEventId.${userId}`;
    this.handlers = handlers;
    this.ctrl = new AbortController();
    this.stopped = false;
    this.sse = new SseFollower(api, useSse);
  }

  get lastId() {
    const value = Number(localStorage.getItem(this.key));
    return Number.isSafeInteger(value) && value > 0 ? value : 0;
  }

  set lastId(id) {
    localStorage.setItem(this.key, String(id));
  }

  start() {
    this.done = this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    this.ctrl.abort();
  }

  get transport() {
    return this.sse.enabled ? "sse" : "poll";
  }

  async run() {
    const signal = this.ctrl.signal;
    let backoff = BACKOFF_MIN_MS;
    let resetOnce = false;
    this.wantResync = true;
    while (!this.stopped) {
      try {
        if (this.wantResync) {
          this.status("resyncing");
          await this.resync(signal);
          this.wantResync = false;
        }
        if (this.sse.enabled) {
          await this.sse.follow(`/api/stream?last_event_id=${this.lastId}`, PERSONAL_LOG_TYPES, signal, {
            onOpen: () => this.status("online"),
            onDown: () => this.status("offline", new ApiError(0, "network_error", "The event stream was cut.")),
            onEvent: async (event, source) => {
              if (event.id <= this.lastId || this.stopped) return;
              await this.deliver(event);
              this.lastId = event.id;
              if (this.wantResync) source.close();
            },
          });
          if (this.stopped || this.wantResync) continue;
        }
        // After a failure, or when the stream ended, a poll that answers at once tells whether
        // the server is back (or why the stream was refused).
        const timeout = this.lastStatus === "online" && !this.sse.enabled ? POLL_TIMEOUT_SECS : 0;
        const body = await this.api.get(
          `/api/updates?last_event_id=${this.lastId}&timeout=${timeout}`,
          { signal, timeoutMs: timeout * 1000 + POLL_GRACE_MS });
        this.status("online");
        backoff = BACKOFF_MIN_MS;
        resetOnce = false;
        for (const event of body.events) {
          if (this.stopped) return;
          await this.deliver(event);
          this.lastId = event.id;
        }
      } catch (err) {
        if (this.stopped || err.name === "AbortError") return;
        if (err.status === 401) {
          this.stopped = true;
          this.handlers.onUnauthorized?.(err);
          return;
        }
        if (err.status === 410 && err.code === "events_expired") {
          // Events after our id were pruned: the snapshot stands in for them.
          this.lastId = Number(err.body?.last_event_id) || 0;
          this.wantResync = true;
          continue;
        }
        if (err.status === 400 && !resetOnce) {
          // Our id is ahead of the log (the server's data was reset): start the log over.
          resetOnce = true;
          this.lastId = 0;
          this.wantResync = true;
          continue;
        }
        this.status("offline", err);
        const wait = err.retryAfterMs ?? backoff * (0.75 + Math.random() / 2);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        await sleep(wait, signal);
      }
    }
  }

  async resync(signal) {
    const backlog = [];
    let id = this.lastId;
    for (;;) {
      const body = await this.api.get(`/api/updates?last_event_id=${id}&timeout=0&limit=${DRAIN_PAGE}`, { signal });
      backlog.push(...body.events);
      id = body.last_event_id;
      if (body.events.length < DRAIN_PAGE) break;
    }
    if (this.stopped) return;
    await this.handlers.onResync(backlog);
    this.lastId = id;
    this.status("online");
  }

  async deliver(event) {
    try {
      await this.handlers.onEvent(event);
    } catch (err) {
      // One event the page cannot show must not stop the log; the next snapshot repairs the view.
      console.warn("event", event.id, event.type, "not applied:", err);
      this.wantResync = true;
    }
  }

  status(state, err = null) {
    if (state !== this.lastStatus || err) this.handlers.onStatus?.(state, err);
    this.lastStatus = state;
  }
}

/** A client-side id for a submission (crypto.randomUUID needs a secure context; this does not). */
export function newClientTempId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Follows one duel's public log (docs/api.md, spectating): over Server-Sent Events
 * (GET /api/duels/{id}/stream?ticket=…) where the browser and the server can, else by long
 * polling GET /api/duels/{id}/updates. Events come in order, each once (ids per duel).
 *
 * EventSource says nothing about why a stream was refused (410, 401, …): when it gives up, one
 * long poll with timeout=0 asks the same question and gets the status and error body, and the
 * loop decides from those, exactly as the polling loop does.
 *
 * handlers.onEvent(event)   each new event (awaited)
 * handlers.onReset()        the log was pruned past our id: take the REST snapshot (awaited)
 * handlers.onStatus(state, err) "online" | "offline"
 */
export class DuelLogStream {
  constructor(api, duelId, handlers, { useSse = typeof EventSource === "function" } = {}) {
    this.api = api;
    this.duelId = duelId;
    this.handlers = handlers;
    this.lastId = 0;
    this.sse = new SseFollower(api, useSse);
    this.ctrl = new AbortController();
    this.stopped = false;
  }

  start() {
    this.done = this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    this.ctrl.abort();
  }

  async run() {
    const signal = this.ctrl.signal;
    let backoff = BACKOFF_MIN_MS;
    while (!this.stopped) {
      try {
        if (this.sse.enabled) {
          await this.sse.follow(`/api/duels/${this.duelId}/stream?last_event_id=${this.lastId}`, DUEL_LOG_TYPES, signal, {
            onOpen: () => this.status("online"),
            onDown: () => this.status("offline"),
            onEvent: (event) => this.deliver(event),
          });
          if (this.stopped) return;
          // The stream ended: one quick poll tells why (and delivers what it holds).
          await this.poll(0, signal);
        } else {
          await this.poll(this.online ? POLL_TIMEOUT_SECS : 0, signal);
        }
        backoff = BACKOFF_MIN_MS;
      } catch (err) {
        if (this.stopped || err.name === "AbortError") return;
        if (err.status === 410 && err.code === "events_expired") {
          this.lastId = Number(err.body?.last_event_id) || 0;
          await this.handlers.onReset?.();
          continue;
        }
        if (err.status === 404 || err.status === 401 || (err.status === 400 && err.code !== "events_expired")) {
          // The duel is gone or the session ended (the app handles 401): nothing to follow.
          this.status("offline", err);
          return;
        }
        this.status("offline", err);
        await sleep(err.retryAfterMs ?? backoff * (0.75 + Math.random() / 2), signal);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
  }

  async poll(timeout, signal) {
    const body = await this.api.get(
      `/api/duels/${this.duelId}/updates?last_event_id=${this.lastId}&timeout=${timeout}`,
      { signal, timeoutMs: timeout * 1000 + POLL_GRACE_MS });
    this.status("online");
    for (const event of body.events) await this.deliver(event);
  }

  async deliver(event) {
    if (this.stopped || event.id <= this.lastId) return;
    this.lastId = event.id;
    try {
      await this.handlers.onEvent(event);
    } catch (err) {
      console.warn("duel event", event.id, event.type, "not applied:", err);
    }
  }

  status(state, err = null) {
    this.online = state === "online";
    if (state !== this.lastStatus || err) this.handlers.onStatus?.(state, err);
    this.lastStatus = state;
  }
}

export const DUEL_LOG_TYPES = ["duel_started", "submission", "duel_finished"];
// An SSE message of a named type reaches only the listeners of that type: every type of the
// personal log (docs/events.md) is listened to.
export const PERSONAL_LOG_TYPES = [
  "queue_joined", "queue_left", "duel_started", "submission_created", "submission_update", "submission_verdict",
  "opponent_verdict", "duel_finished", "challenge_received", "challenge_created", "challenge_accepted",
  "challenge_declined", "challenge_canceled", "challenge_expired", "rematch_offered",
];
const SSE_REFUSALS_MAX = 2;

/**
 * One EventSource at a time on a log, authenticated by a stream ticket. follow() resolves when
 * the stream is over for good (refused or closed): the caller then polls once to learn why.
 * A server without streams (no ticket endpoint, or refusing every first connection) turns the
 * follower off, and the caller long-polls from then on.
 */
class SseFollower {
  constructor(api, enabled) {
    this.api = api;
    this.enabled = enabled;
    this.refusals = 0;
  }

  async follow(path, types, signal, { onOpen, onDown, onEvent }) {
    let ticket;
    try {
      ticket = await this.api.streamTicket();
    } catch (err) {
      if (err.status === 404 || err.status === 405) {
        this.enabled = false;
        return;
      }
      throw err;
    }
    if (signal.aborted) return;
    const opened = await new Promise((resolve) => {
      const source = new EventSource(`${path}&ticket=${encodeURIComponent(ticket)}`);
      let wasOpen = false;
      let queue = Promise.resolve();
      const finish = () => {
        source.close();
        signal.removeEventListener("abort", finish);
        queue.then(() => resolve(wasOpen));
      };
      source.onopen = () => {
        wasOpen = true;
        this.refusals = 0;
        onOpen?.();
      };
      const onMessage = (message) => {
        const event = parseSseEvent(message);
        // In order, one at a time, each handled before the next (as the polling loop does).
        if (event) queue = queue.then(() => onEvent(event, { close: finish }));
      };
      for (const type of types) source.addEventListener(type, onMessage);
      source.onmessage = onMessage;
      source.onerror = () => {
        // CONNECTING: the browser reconnects by itself, with Last-Event-ID. CLOSED: refused.
        if (source.readyState === EventSource.CLOSED) finish();
        else onDown?.();
      };
      signal.addEventListener("abort", finish, { once: true });
    });
    if (!opened && !signal.aborted) {
      // Refused before it opened: maybe an expired ticket (take a new one); twice in a row, no streams.
      this.api.forgetTicket();
      if (++this.refusals >= SSE_REFUSALS_MAX) this.enabled = false;
    }
  }
}

/** An SSE message as a log event: `data` is the event's JSON, `id` its id, `event` its type. */
export function parseSseEvent(message) {
  let parsed;
  try {
    parsed = JSON.parse(message.data);
  } catch {
    return null;
  }
  if (parsed && typeof parsed === "object" && "type" in parsed && "data" in parsed && "id" in parsed) return parsed;
  const id = Number(message.lastEventId);
  return Number.isSafeInteger(id) ? { id, type: message.type, data: parsed } : null;
}
