// The pages other than the duel: log in / register, home (profile, play, leaderboard) and a
// user's duel history. Each view has `el`, `load()`, and optionally `destroy()`, `tick()`
// (every second), `onQueue()` and `onProfile()` (the app calls them when those change).

import { ratingChart, ratingText } from "./chart.js";
import { clock, dateTimeOf, fill, h, signed } from "./dom.js";

const LEADERBOARD_SIZE = 20;
const HISTORY_PAGE = 10;
const CHART_POINTS = 100;
const LIVE_PAGE = 20;
const LIVE_REFRESH_MS = 15000;

export class AuthView {
  constructor(app) {
    this.app = app;
  }

  async load() {
    this.nickname = h("input", { name: "nickname", testid: "auth-nickname", autocomplete: "username", required: true,
      maxlength: "32", placeholder: "e.g. ada_l" });
    this.password = h("input", { name: "password", type: "password", testid: "auth-password", required: true,
      autocomplete: "current-password" });
    this.error = h("p", { class: "form-error", testid: "auth-error", role: "alert", hidden: true });
    this.buttons = [
      h("button", { type: "submit", class: "btn btn-primary", testid: "login-button" }, "Log in"),
      h("button", { type: "button", class: "btn", testid: "register-button", onclick: () => this.send("register") }, "Create account"),
    ];
    const form = h("form", { class: "auth-form", testid: "auth-form", onsubmit: (e) => { e.preventDefault(); this.send("login"); } },
      h("label", {}, "Nickname", this.nickname),
      h("label", {}, "Password", this.password),
      this.error,
      h("div", { class: "auth-actions" }, this.buttons),
      h("p", { class: "muted small" }, "New here? Pick a nickname (3–32 letters, digits, _ or -) and a password of 8+ characters, then Create account."));
    this.el = h("section", { class: "auth", testid: "auth" },
      h("div", { class: "panel auth-card" },
        h("h1", {}, "Duely"),
        h("p", { class: "lead" }, "1-v-1 programming duels. Same problem, same clock: the first Accepted solution wins."),
        form));
    return this;
  }

  async send(action) {
    if (!this.nickname.value || !this.password.value) {
      this.showError("Enter a nickname and a password.");
      return;
    }
    const body = { nickname: this.nickname.value.trim(), password: this.password.value };
    this.buttons.forEach((b) => { b.disabled = true; });
    this.showError(null);
    try {
      if (action === "register") {
        const created = await this.app.api.post("/api/users", body, { auth: false });
        await this.app.signIn(created.token);
      } else {
        const answer = await this.app.api.post("/api/auth/login", body, { auth: false });
        await this.app.signIn(answer.token, answer.user);
      }
    } catch (err) {
      this.showError(err.display ?? String(err));
    } finally {
      this.buttons.forEach((b) => { b.disabled = false; });
    }
  }

  showError(message) {
    this.error.hidden = !message;
    this.error.textContent = message ?? "";
  }
}

export class HomeView {
  constructor(app) {
    this.app = app;
  }

  async load() {
    const [board, settings] = await Promise.all([
      this.app.api.get(`/api/leaderboard?limit=${LEADERBOARD_SIZE}`),
      this.app.api.get("/api/users/me/settings").catch(() => null),
    ]);
    this.settings = settings;
    this.profile = h("section", { class: "panel profile", testid: "profile" });
    this.play = h("section", { class: "panel play", testid: "play-panel" });
    this.challengesPanel = h("section", { class: "panel", testid: "challenges-panel" });
    this.board = h("section", { class: "panel leaderboard", testid: "leaderboard" });
    this.el = h("div", { class: "home" }, h("div", { class: "home-left" }, this.profile, this.play, this.challengesPanel), this.board);
    this.renderProfile();
    this.renderPlay();
    this.renderChallenges();
    this.renderBoard(board.users);
    return this;
  }

  onChallenges() {
    if (this.el) this.renderChallenges();
  }

  renderChallenges() {
    const challenges = this.app.challenges;
    const toggle = this.settings ? h("label", { class: "check small" },
      h("input", { type: "checkbox", checked: this.settings.accept_challenges, testid: "accept-challenges-toggle",
        onchange: (e) => this.setAcceptChallenges(e.target) }),
      " Others may challenge me") : null;
    fill(this.challengesPanel,
      h("div", { class: "panel-head" }, h("h3", {}, "Challenges"), toggle),
      h("p", { class: "muted small" }, "Challenge a player from the leaderboard or their profile, or invite anyone with a link."),
      h("div", { class: "challenge-buttons" },
        h("button", { type: "button", class: "btn", testid: "open-challenge-button", onclick: () => challenges.openDialog(null) },
          "Create an invite link"),
        h("a", { class: "btn btn-ghost", href: "#/live", testid: "watch-link" }, "Watch live duels")),
      challenges.outgoingList());
  }

  async setAcceptChallenges(box) {
    try {
      this.settings = await this.app.api.patch("/api/users/me/settings", { accept_challenges: box.checked });
    } catch (err) {
      box.checked = !box.checked;
      this.app.failed("Could not change the setting", err);
    }
  }

  onProfile() {
    if (this.el) this.renderProfile();
  }

  onQueue() {
    if (this.el) this.renderPlay();
  }

  tick() {
    const since = this.app.queue.since ? Date.parse(this.app.queue.since) : NaN;
    if (this.waitClock && !Number.isNaN(since)) this.waitClock.textContent = clock(this.app.api.now() - since);
  }

  renderProfile() {
    const me = this.app.me;
    const d = me.duels ?? { played: 0, won: 0, lost: 0, drawn: 0 };
    const stat = (key, label) => h("div", { class: "stat" },
      h("div", { class: "stat-value", testid: `profile-${key}` }, String(d[key] ?? 0)),
      h("div", { class: "stat-label" }, label));
    fill(this.profile,
      h("div", { class: "profile-head" },
        h("div", {},
          h("div", { class: "muted" }, "Signed in as"),
          h("h2", { testid: "profile-nickname" }, me.nickname)),
        h("div", { class: "rating-badge" },
          h("div", { class: "rating-value", testid: "profile-rating" }, ratingText(me.rating, me.provisional)),
          h("div", { class: "stat-label" }, "rating"))),
      h("div", { class: "stats" }, stat("played", "played"), stat("won", "won"), stat("lost", "lost"), stat("drawn", "drawn")),
      h("a", { href: "#/history", class: "link", testid: "profile-history-link" }, "Your duel history →"));
  }

  renderPlay() {
    const q = this.app.queue;
    this.waitClock = null;
    if (q.status === "waiting") {
      this.waitClock = h("span", { class: "wait-clock", testid: "queue-wait-time" }, "0:00");
      fill(this.play,
        h("div", { class: "waiting", testid: "queue-status", dataset: { status: "waiting" } },
          h("div", { class: "spinner", "aria-hidden": "true" }),
          h("div", {},
            h("h2", {}, "Looking for an opponent…"),
            h("p", { class: "muted" }, "Waiting ", this.waitClock,
              ". Keep this page open: you stay in the queue while it is connected."))),
        h("button", { type: "button", class: "btn", testid: "cancel-queue-button", onclick: () => this.app.cancelQueue() }, "Cancel"));
      this.tick();
    } else if (q.status === "in_duel") {
      fill(this.play,
        h("h2", { testid: "queue-status", dataset: { status: "in_duel" } }, "Your duel is on"),
        h("a", { class: "btn btn-primary", href: `#/duels/${q.duel_id}`, testid: "return-to-duel" }, "Back to the duel"));
    } else {
      fill(this.play,
        h("h2", { testid: "queue-status", dataset: { status: "idle" } }, "Ready for a duel?"),
        h("p", { class: "muted" }, "You are matched with a player near your rating and both get the same problem. "
          + "The first Accepted solution wins."),
        h("button", { type: "button", class: "btn btn-primary btn-big", testid: "find-duel-button", onclick: () => this.app.findDuel() },
          "Find a duel"));
    }
  }

  renderBoard(users) {
    fill(this.board,
      h("h2", {}, "Leaderboard"),
      h("table", { class: "table" },
        h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Player"), h("th", { class: "num" }, "Rating"),
          h("th", { class: "num" }, "W / L / D"), h("th", {}, ""))),
        h("tbody", {}, users.map((u, i) => h("tr", {
          testid: "leaderboard-row", dataset: { userId: String(u.id) }, class: u.id === this.app.me.id ? "me" : null,
        },
        h("td", { class: "muted" }, String(i + 1)),
        h("td", {}, h("a", { href: `#/users/${u.id}` }, u.nickname)),
        h("td", { class: "num" }, ratingText(u.rating, u.provisional)),
        h("td", { class: "num muted" }, `${u.duels.won} / ${u.duels.lost} / ${u.duels.drawn}`),
        h("td", { class: "num" }, u.id === this.app.me.id ? null : h("button", {
          type: "button", class: "btn btn-small", testid: "challenge-button", title: `Challenge ${u.nickname}`,
          onclick: () => this.app.challenges.openDialog(u.nickname),
        }, "Challenge")))))));
  }
}

export class HistoryView {
  constructor(app, userId) {
    this.app = app;
    this.userId = userId;
  }

  async load() {
    const own = this.userId === this.app.me.id;
    const [user, page, ratings, blocks] = await Promise.all([
      this.app.api.get(`/api/users/${this.userId}`),
      this.app.api.get(`/api/users/${this.userId}/duels?limit=${HISTORY_PAGE}`),
      this.app.api.get(`/api/users/${this.userId}/rating-history?limit=${CHART_POINTS}`),
      own ? null : this.app.api.get("/api/users/me/blocks").catch(() => null),
    ]);
    this.user = user;
    this.blocked = Boolean(blocks?.users.some((u) => u.user_id === this.userId));
    this.actions = h("div", { class: "profile-actions" });
    if (!own) this.renderActions();
    this.list = h("ol", { class: "history-list", testid: "history-list" });
    this.more = h("button", { type: "button", class: "btn", testid: "history-more", onclick: () => this.loadMore() }, "Load more");
    const d = user.duels;
    this.el = h("section", { class: "history", testid: "history", dataset: { userId: String(this.userId) } },
      h("div", { class: "panel history-head" },
        h("h2", {}, own ? "Your duels" : `${user.nickname}’s duels`),
        h("span", { class: "muted" }, `Rating ${ratingText(user.rating, user.provisional)} · ${d.played} played · ${d.won} won · ${d.lost} lost · ${d.drawn} drawn`),
        this.actions),
      h("div", { class: "panel", testid: "rating-chart" },
        ratings.points.length ? ratingChart(ratings.points) : h("p", { class: "muted" }, "No rated duels yet."),
        h("p", { class: "muted small" }, "Rating after each duel (the last 100); the band is ± the rating deviation. "
          + "A rating is provisional, shown as 1500?, while its deviation is 110 or more.")),
      h("div", { class: "panel" }, this.list, this.more));
    this.append(page);
    return this;
  }

  renderActions() {
    fill(this.actions,
      this.blocked ? null : h("button", { type: "button", class: "btn btn-primary btn-small", testid: "profile-challenge-button",
        onclick: () => this.app.challenges.openDialog(this.user.nickname) }, "Challenge"),
      h("button", { type: "button", class: "btn btn-small btn-ghost", testid: "block-button", dataset: { blocked: String(this.blocked) },
        onclick: () => this.toggleBlock() }, this.blocked ? "Unblock" : "Block"));
  }

  async toggleBlock() {
    const path = `/api/users/me/blocks/${this.userId}`;
    try {
      if (this.blocked) await this.app.api.delete(path);
      else await this.app.api.put(path);
      this.blocked = !this.blocked;
      this.app.notify(this.blocked ? `${this.user.nickname} is blocked: no challenges either way.` : `${this.user.nickname} is unblocked.`, "info");
      this.renderActions();
    } catch (err) {
      this.app.failed(this.blocked ? "Could not unblock" : "Could not block", err);
    }
  }

  async loadMore() {
    this.more.disabled = true;
    try {
      this.append(await this.app.api.get(`/api/users/${this.userId}/duels?limit=${HISTORY_PAGE}&before_id=${this.nextBeforeId}`));
    } catch (err) {
      this.app.failed("Could not load more duels", err);
    } finally {
      this.more.disabled = false;
    }
  }

  append(page) {
    this.nextBeforeId = page.next_before_id;
    this.more.hidden = !page.next_before_id;
    if (!page.duels.length && !this.list.children.length) {
      this.list.append(h("li", { class: "empty muted" }, "No duels yet."));
    }
    for (const duel of page.duels) this.list.append(this.item(duel));
  }

  item(duel) {
    const me = duel.players.find((p) => p.user_id === this.userId);
    const them = duel.players.find((p) => p.user_id !== this.userId);
    let outcome = "active";
    let label = "In progress";
    if (duel.status === "finished") {
      outcome = duel.result?.outcome === "draw" ? "draw" : duel.result?.winner_id === this.userId ? "won" : "lost";
      label = { draw: "Draw", won: "Won", lost: "Lost" }[outcome];
    }
    const delta = duel.rating_changes?.[this.userId];
    return h("li", {},
      h("a", { class: `history-item outcome-${outcome}`, href: `#/duels/${duel.id}`, testid: "history-item",
        dataset: { duelId: String(duel.id), outcome } },
      h("span", { class: "hi-outcome" }, label),
      h("span", { class: "hi-main" },
        h("span", { class: "hi-title" }, duel.task?.title ?? "Task"),
        h("span", { class: "muted" }, `vs ${them?.nickname ?? "?"} (${them?.rating_before ?? "?"}) · ${dateTimeOf(duel.started_at)}`)),
      h("span", { class: `hi-delta ${delta > 0 ? "up" : delta < 0 ? "down" : "same"}` },
        duel.rated === false ? "unrated" : delta === undefined ? "" : signed(delta)),
      h("span", { class: "muted hi-rating" }, me?.rating_after ? `→ ${me.rating_after}` : "")));
  }
}

/** #/live: the duels being played now, each with a link to watch it. */
export class LiveView {
  constructor(app) {
    this.app = app;
  }

  async load() {
    this.list = h("tbody", {});
    this.more = h("button", { type: "button", class: "btn", testid: "live-more", hidden: true, onclick: () => this.loadMore() }, "Load more");
    this.el = h("section", { class: "history", testid: "live-duels" },
      h("div", { class: "panel history-head" }, h("h2", {}, "Live duels"),
        h("button", { type: "button", class: "btn btn-small", testid: "live-refresh", onclick: () => this.refresh() }, "Refresh")),
      h("div", { class: "panel" },
        h("table", { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, "Players"), h("th", {}, "Task"), h("th", {}, ""), h("th", { class: "num" }, "Left"), h("th", {}, ""))),
          this.list),
        this.more));
    await this.refresh();
    this.timer = setInterval(() => this.refresh().catch(() => {}), LIVE_REFRESH_MS);
    return this;
  }

  destroy() {
    clearInterval(this.timer);
  }

  async refresh() {
    const page = await this.app.api.get(`/api/duels?status=active&limit=${LIVE_PAGE}`);
    this.list.replaceChildren();
    this.append(page);
  }

  async loadMore() {
    try {
      this.append(await this.app.api.get(`/api/duels?status=active&limit=${LIVE_PAGE}&before_id=${this.nextBeforeId}`));
    } catch (err) {
      this.app.failed("Could not load more duels", err);
    }
  }

  append(page) {
    this.nextBeforeId = page.next_before_id;
    this.more.hidden = !page.next_before_id;
    if (!page.duels.length && !this.list.children.length) {
      this.list.append(h("tr", {}, h("td", { class: "muted", colspan: "5", testid: "live-empty" }, "Nobody is playing right now.")));
    }
    for (const duel of page.duels) {
      const [a, b] = duel.players;
      const player = (p) => (p ? `${p.nickname} (${p.rating_before ?? ratingText(p.rating, p.provisional)})` : "?");
      this.list.append(h("tr", { testid: "live-duel", dataset: { duelId: String(duel.id) } },
        h("td", {}, `${player(a)} vs ${player(b)}`),
        h("td", {}, duel.task?.title ?? ""),
        h("td", { class: "muted small" }, duel.rated === false ? "unrated" : "rated"),
        h("td", { class: "num", dataset: { deadline: duel.deadline ?? "" } }, this.left(duel.deadline)),
        h("td", { class: "num" }, h("a", { class: "btn btn-small", href: `#/duels/${duel.id}`, testid: "watch-duel" }, "Watch"))));
    }
  }

  left(deadline) {
    const ms = Date.parse(deadline) - this.app.api.now();
    return Number.isNaN(ms) ? "" : clock(ms);
  }

  tick() {
    for (const cell of this.list.querySelectorAll("td[data-deadline]")) cell.textContent = this.left(cell.dataset.deadline);
  }
}
