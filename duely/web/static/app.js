// The page's shell: who is signed in, the queue state, routing between views (#/…), the
// header, messages, and what each event of the log means for the page.

import { Api, EventStream } from "./api.js";
import { ChallengeView, Challenges } from "./challenges.js";
import { DuelView } from "./duel.js";
import { ratingText } from "./chart.js";
import { clock, fill, h } from "./dom.js";
import { UserStore } from "./store.js";
import { AuthView, HistoryView, HomeView, LiveView } from "./views.js";

const TOAST_MS = 8000;

class App {
  constructor() {
    this.api = new Api();
    this.api.onUnauthorized = () => this.sessionEnded("Your session has ended. Please log in again.");
    this.me = null;
    this.store = null;
    this.stream = null;
    this.view = null;
    this.queue = { status: "idle" };
    this.routeSeq = 0;
    this.main = document.getElementById("main");
    this.header = {
      nav: document.querySelector("[data-testid=nav]"),
      chip: document.querySelector("[data-testid=live-chip]"),
      conn: document.querySelector("[data-testid=connection-status]"),
      account: document.querySelector("[data-testid=account]"),
      name: document.querySelector("[data-testid=current-user]"),
      rating: document.querySelector("[data-testid=current-rating]"),
    };
    this.toasts = document.querySelector("[data-testid=toasts]");
    this.challenges = new Challenges(this);
    this.takeInviteLink();
    document.querySelector("[data-testid=logout-button]").addEventListener("click", () => this.logout());
    window.addEventListener("hashchange", () => this.route());
    setInterval(() => this.tick(), 1000);
  }

  /** /?challenge=<id> (an invite link) becomes the page #/challenge/<id>, kept through a log-in. */
  takeInviteLink() {
    const id = new URLSearchParams(location.search).get("challenge");
    if (id) history.replaceState(null, "", `/#/challenge/${encodeURIComponent(id)}`);
  }

  async start() {
    if (this.api.token) {
      try {
        await this.signIn(this.api.token);
        return;
      } catch (err) {
        if (err.status !== 401) {
          this.showUnreachable(err);
          return;
        }
      }
    }
    this.route();
  }

  // -- session ---------------------------------------------------------------------------------

  async signIn(token, user = null) {
    this.api.setToken(token);
    const me = user ?? await this.api.get("/api/users/me");
    this.me = me;
    this.store = new UserStore(me.id);
    this.queue = { status: "idle" };
    this.renderHeader();
    this.stream = new EventStream(this.api, me.id, {
      onEvent: (event) => this.onEvent(event),
      onResync: (backlog) => this.onResync(backlog),
      onStatus: (state, err) => this.onStatus(state, err),
      onUnauthorized: () => this.sessionEnded("Your session has ended. Please log in again."),
    }).start();
    this.route();
  }

  async logout() {
    if (!this.me) return;
    try {
      if (this.queue.status === "waiting") await this.api.delete("/api/queue");
      await this.api.post("/api/auth/logout");
    } catch (err) {
      this.failed("Logging out on the server failed (this page forgets you anyway)", err);
    }
    // The next person at this browser starts at home, not on the last page seen.
    history.replaceState(null, "", "#/");
    this.sessionEnded(null);
  }

  sessionEnded(message) {
    if (!this.me && !this.api.token) return;
    this.stream?.stop();
    this.stream = null;
    this.me = null;
    this.store = null;
    this.api.setToken(null);
    this.queue = { status: "idle" };
    this.challenges.clear();
    this.renderHeader();
    if (message) this.notify(message, "info");
    this.route();
  }

  async refreshMe() {
    try {
      const me = await this.api.get("/api/users/me");
      if (this.me?.id !== me.id) return;
      this.me = me;
      this.renderHeader();
      this.view?.onProfile?.();
    } catch (err) {
      this.failed("Could not refresh your profile", err);
    }
  }

  // -- the queue -------------------------------------------------------------------------------

  setQueue(q) {
    this.queue = { status: q.status, since: q.since ?? null, duel_id: q.duel_id ?? null };
    this.renderChip();
    this.view?.onQueue?.();
  }

  async findDuel() {
    try {
      const q = await this.api.post("/api/queue");
      // A duel_started may already have come in; it outranks this answer.
      if (this.queue.status !== "in_duel") this.setQueue({ status: "waiting", since: q.since });
      if (!(this.view instanceof HomeView) && this.queue.status === "waiting") location.hash = "#/";
    } catch (err) {
      if (err.code === "already_in_duel") {
        const q = await this.api.get("/api/queue").catch(() => null);
        if (q) this.setQueue(q);
        if (q?.duel_id) location.hash = `#/duels/${q.duel_id}`;
      }
      this.failed("Could not join the queue", err);
    }
  }

  async cancelQueue() {
    try {
      await this.api.delete("/api/queue");
      if (this.queue.status === "waiting") this.setQueue({ status: "idle" });
    } catch (err) {
      this.failed("Could not leave the queue", err);
    }
  }

  // -- the event log ---------------------------------------------------------------------------

  async onEvent(event) {
    const d = event.data ?? {};
    if (this.challenges.onEvent(event)) return;
    switch (event.type) {
      case "queue_joined":
        if (this.queue.status !== "in_duel") this.setQueue({ status: "waiting", since: d.since });
        break;
      case "queue_left":
        if (this.queue.status === "waiting") this.setQueue({ status: "idle" });
        if (d.reason === "expired") this.notify("You were taken out of the queue: the page lost its connection for too long.", "info");
        break;
      case "duel_started":
        this.setQueue({ status: "in_duel", duel_id: d.duel_id });
        this.store.forgetAllBut(d.duel_id);
        location.hash = `#/duels/${d.duel_id}`;
        break;
      case "opponent_verdict":
        this.store.addOpponentVerdict(d.duel_id, event.id, d);
        break;
      case "duel_finished":
        if (this.queue.status === "in_duel" && this.queue.duel_id === d.duel_id) this.setQueue({ status: "idle" });
        this.refreshMe();
        break;
      default:
    }
    if (d.duel_id !== undefined && this.view instanceof DuelView && this.view.duelId === d.duel_id) {
      await this.view.onEvent(event);
    }
  }

  /** The REST snapshot: queue state, profile, the open view. `backlog` is what the log held. */
  async onResync(backlog) {
    for (const event of backlog) {
      // The one thing the snapshot cannot show: the opponent's verdicts while the duel runs.
      if (event.type === "opponent_verdict") this.store.addOpponentVerdict(event.data.duel_id, event.id, event.data);
    }
    const q = await this.api.get("/api/queue");
    this.setQueue(q);
    this.store.forgetAllBut(q.status === "in_duel" ? q.duel_id : null);
    if (q.status === "in_duel" && this.view instanceof HomeView) location.hash = `#/duels/${q.duel_id}`;
    await this.refreshMe();
    // A server without challenges (404) still serves the rest of the page.
    await this.challenges.refresh().catch((err) => { if (err.status !== 404) throw err; });
    await this.view?.refresh?.();
  }

  onStatus(state, err) {
    const conn = this.header.conn;
    conn.hidden = state === "online";
    conn.dataset.state = state;
    conn.textContent = state === "offline" ? `Reconnecting… (${err?.display ?? "connection lost"})` : "Syncing…";
  }

  // -- routing ---------------------------------------------------------------------------------

  async route() {
    const seq = ++this.routeSeq;
    this.view?.destroy?.();
    const path = location.hash.replace(/^#/, "") || "/";
    let m;
    let view;
    if (!this.me) view = new AuthView(this);
    else if ((m = path.match(/^\/duels\/(\d+)$/))) view = new DuelView(this, Number(m[1]));
    else if (path === "/history") view = new HistoryView(this, this.me.id);
    else if (path === "/live") view = new LiveView(this);
    else if ((m = path.match(/^\/challenge\/([\w-]+)$/))) view = new ChallengeView(this, m[1]);
    else if ((m = path.match(/^\/users\/(\d+)$/))) view = new HistoryView(this, Number(m[1]));
    else view = new HomeView(this);
    this.view = view;
    this.renderHeader();
    if (!this.main.firstElementChild || this.main.dataset.view !== view.constructor.name) {
      fill(this.main, h("div", { class: "loading", testid: "loading" }, "Loading…"));
    }
    try {
      await view.load();
    } catch (err) {
      if (seq !== this.routeSeq || err.status === 401) return;
      fill(this.main, h("div", { class: "panel notice", testid: "load-error" },
        h("h2", {}, err.status === 404 ? "Not found" : "Could not load this page"),
        h("p", {}, err.display ?? String(err)),
        h("button", { type: "button", class: "btn", onclick: () => this.route() }, "Try again")));
      return;
    }
    if (seq !== this.routeSeq) return;
    this.main.dataset.view = view.constructor.name;
    fill(this.main, view.el);
  }

  showUnreachable(err) {
    fill(this.main, h("div", { class: "panel notice", testid: "load-error" },
      h("h2", {}, "Cannot reach Duely"),
      h("p", {}, err.display ?? String(err)),
      h("button", { type: "button", class: "btn", onclick: () => this.start() }, "Try again")));
  }

  languages() {
    this.languagesPromise ??= this.api.get("/api/languages").then((body) => body.languages)
      .catch((err) => { this.languagesPromise = null; throw err; });
    return this.languagesPromise;
  }

  // -- header, messages ------------------------------------------------------------------------

  renderHeader() {
    const signed = Boolean(this.me);
    this.header.nav.hidden = !signed;
    this.header.account.hidden = !signed;
    if (signed) {
      this.header.name.textContent = this.me.nickname;
      this.header.rating.textContent = ratingText(this.me.rating, this.me.provisional);
    } else {
      this.header.conn.hidden = true;
    }
    const path = location.hash.replace(/^#/, "") || "/";
    for (const a of this.header.nav.querySelectorAll("a")) {
      a.classList.toggle("active", a.getAttribute("href").slice(1) === path);
    }
    this.renderChip();
  }

  /** The queue or the running duel, visible from every page but the one that shows it. */
  renderChip() {
    const chip = this.header.chip;
    const q = this.queue;
    const onHome = this.view instanceof HomeView;
    const onDuel = this.view instanceof DuelView && this.view.duelId === q.duel_id;
    if (this.me && q.status === "waiting" && !onHome) {
      fill(chip, h("a", { href: "#/" }, "Looking for an opponent ", h("span", { testid: "chip-wait-time" }, "")),
        h("button", { type: "button", class: "btn btn-small", onclick: () => this.cancelQueue() }, "Cancel"));
      chip.hidden = false;
      this.tickChip();
    } else if (this.me && q.status === "in_duel" && !onDuel) {
      fill(chip, h("a", { href: `#/duels/${q.duel_id}`, testid: "chip-duel" }, "Duel in progress — back to it →"));
      chip.hidden = false;
    } else {
      chip.hidden = true;
      chip.replaceChildren();
    }
  }

  tickChip() {
    const el = this.header.chip.querySelector("[data-testid=chip-wait-time]");
    if (el && this.queue.since) el.textContent = clock(this.api.now() - Date.parse(this.queue.since));
  }

  tick() {
    this.tickChip();
    this.view?.tick?.();
  }

  /** An API call failed: say what and why, in the server's words. A 401 has already ended the
   * session, with its own message. */
  failed(what, err) {
    if (err.status !== 401) this.notify(`${what}: ${err.display ?? err}`);
  }

  /** A message in the corner. */
  notify(message, kind = "error") {
    const toast = h("div", { class: `toast toast-${kind}`, testid: "toast", role: kind === "error" ? "alert" : "status",
      dataset: { kind } }, h("span", {}, message),
    h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", onclick: () => toast.remove() }, "×"));
    this.toasts.append(toast);
    setTimeout(() => toast.remove(), TOAST_MS);
  }
}

new App().start();
