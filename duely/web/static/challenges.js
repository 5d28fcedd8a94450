// Challenges (docs/api.md, "Challenges"): the player's pending incoming and outgoing ones
// (rematch offers included), kept from the event log and from GET /api/challenges after every
// resync (the snapshot rule); the inbox shown on every page; the "challenge a player" dialog;
// the invite-link screen (/?challenge=<id>).

import { dateTimeOf, fill, h } from "./dom.js";
import { ratingText } from "./chart.js";

// docs/api.md, the challenge object's decline_reason.
export const DECLINE_REASONS = [
  ["generic", "No, thanks"],
  ["later", "Not now, later"],
  ["too_strong", "Too strong for me"],
  ["too_weak", "Too weak for me"],
  ["duration", "Not that long / short"],
  ["casual", "Only unrated duels"],
  ["rated", "Only rated duels"],
  ["no_bot", "No bots, please"],
  ["only_bot", "Only bots, please"],
];
export const DURATIONS = [[300, "5 minutes"], [600, "10 minutes"], [900, "15 minutes"], [1800, "30 minutes"], [3600, "1 hour"]];
const LIFECYCLE = new Set(["challenge_accepted", "challenge_declined", "challenge_canceled", "challenge_expired"]);

export const reasonText = (reason) => (DECLINE_REASONS.find(([r]) => r === reason)?.[1] ?? reason ?? "").toLowerCase();
export const durationText = (secs) => (secs % 60 ? `${secs} s` : secs >= 3600 && secs % 3600 === 0 ? `${secs / 3600} h` : `${secs / 60} min`);
export const inviteUrl = (c) => new URL(c.invite_url ?? `/?challenge=${c.id}`, location.origin).href;

export class Challenges {
  constructor(app) {
    this.app = app;
    this.incoming = new Map();
    this.outgoing = new Map();
    this.el = document.querySelector("[data-testid=challenge-inbox]");
  }

  /** The snapshot: what is pending now. */
  async refresh() {
    const body = await this.app.api.get("/api/challenges");
    this.incoming = new Map(body.incoming.map((c) => [c.id, c]));
    this.outgoing = new Map(body.outgoing.map((c) => [c.id, c]));
    this.changed();
  }

  clear() {
    this.incoming.clear();
    this.outgoing.clear();
    this.changed();
  }

  /** One event of the personal log; returns true when it was a challenge event. */
  onEvent(event) {
    const c = event.data?.challenge;
    if (!c) return false;
    const mine = c.challenger?.user_id === this.app.me.id;
    const other = mine ? c.to?.nickname ?? "Someone" : c.challenger?.nickname ?? "Someone";
    const kind = c.kind === "rematch" ? "rematch offer" : "challenge";
    switch (event.type) {
      case "challenge_received":
      case "rematch_offered":
        // No toast: the inbox under the header shows it, with its buttons, on every page.
        this.incoming.set(c.id, c);
        break;
      case "challenge_created":
        this.outgoing.set(c.id, c);
        break;
      default:
        if (!LIFECYCLE.has(event.type)) return false;
        this.incoming.delete(c.id);
        this.outgoing.delete(c.id);
        if (event.type === "challenge_declined" && mine) {
          this.app.notify(`${other} declined your ${kind}${c.decline_reason && c.decline_reason !== "generic" ? `: ${reasonText(c.decline_reason)}` : "."}`, "info");
        } else if (event.type === "challenge_canceled" && !mine) {
          this.app.notify(`${other} withdrew the ${kind}.`, "info");
        } else if (event.type === "challenge_expired" && mine) {
          this.app.notify(`Your ${kind} to ${other} expired.`, "info");
        }
    }
    this.changed();
    return true;
  }

  changed() {
    this.renderInbox();
    this.app.view?.onChallenges?.();
  }

  /** The pending rematch offer of a duel, either way. */
  rematchOf(duelId) {
    const find = (map) => [...map.values()].find((c) => c.kind === "rematch" && c.rematch_of === duelId);
    return { incoming: find(this.incoming), outgoing: find(this.outgoing) };
  }

  // -- actions -----------------------------------------------------------------------------------

  async create(body) {
    const c = await this.app.api.post("/api/challenges", body);
    this.outgoing.set(c.id, c);
    this.changed();
    return c;
  }

  async accept(c) {
    try {
      const answer = await this.app.api.post(`/api/challenges/${c.id}/accept`);
      this.incoming.delete(c.id);
      this.changed();
      const duelId = answer?.duel?.id ?? answer?.challenge?.duel_id;
      if (duelId) location.hash = `#/duels/${duelId}`;
      return answer;
    } catch (err) {
      this.app.failed("Could not accept", err);
      if (err.code === "challenge_closed" || err.status === 404) {
        this.incoming.delete(c.id);
        this.changed();
      }
      return null;
    }
  }

  async decline(c, reason) {
    try {
      await this.app.api.post(`/api/challenges/${c.id}/decline`, { reason });
    } catch (err) {
      this.app.failed("Could not decline", err);
    }
    this.incoming.delete(c.id);
    this.changed();
  }

  async cancel(c) {
    try {
      await this.app.api.post(`/api/challenges/${c.id}/cancel`);
    } catch (err) {
      this.app.failed("Could not cancel", err);
    }
    this.outgoing.delete(c.id);
    this.changed();
  }

  // -- the inbox: incoming challenges, on every page -----------------------------------------------

  renderInbox() {
    if (!this.el) return;
    const items = this.app.me ? [...this.incoming.values()] : [];
    this.el.hidden = !items.length;
    fill(this.el, items.map((c) => this.incomingCard(c)));
  }

  incomingCard(c) {
    const reason = h("select", { testid: "decline-reason", "aria-label": "Reason" },
      DECLINE_REASONS.map(([value, label]) => h("option", { value }, label)));
    const who = c.challenger;
    return h("div", { class: "challenge-card", testid: "incoming-challenge", dataset: { challengeId: c.id, kind: c.kind } },
      h("div", { class: "challenge-text" },
        h("strong", {}, who.nickname), ` (${ratingText(who.rating, who.provisional)}) `,
        c.kind === "rematch" ? "offers a rematch" : "challenges you",
        h("span", { class: "muted" }, ` · ${c.rated ? "rated" : "unrated"} · ${durationText(c.duration_secs)}`)),
      h("div", { class: "challenge-actions" },
        h("button", { type: "button", class: "btn btn-primary btn-small", testid: "accept-challenge", onclick: () => this.accept(c) }, "Accept"),
        reason,
        h("button", { type: "button", class: "btn btn-small", testid: "decline-challenge", onclick: () => this.decline(c, reason.value) }, "Decline")));
  }

  /** The player's own pending challenges, for the home page. */
  outgoingList() {
    const items = [...this.outgoing.values()];
    if (!items.length) return null;
    return h("ul", { class: "outgoing", testid: "outgoing-challenges" }, items.map((c) => {
      const link = c.to ? null : h("input", { class: "invite-url", readonly: true, value: inviteUrl(c), testid: "invite-url",
        "aria-label": "Invite link", onfocus: (e) => e.target.select() });
      return h("li", { class: "outgoing-item", testid: "outgoing-challenge", dataset: { challengeId: c.id, kind: c.kind } },
        h("div", {},
          c.kind === "rematch" ? `Rematch offered to ${c.to?.nickname}` : c.to ? `Challenge to ${c.to.nickname}` : "Open challenge",
          h("span", { class: "muted" }, ` · ${c.rated ? "rated" : "unrated"} · ${durationText(c.duration_secs)} · until ${dateTimeOf(c.expires_at)}`)),
        link ? h("div", { class: "invite" }, link,
          h("button", { type: "button", class: "btn btn-small", testid: "copy-invite", onclick: () => this.copy(link) }, "Copy link")) : null,
        h("button", { type: "button", class: "btn btn-small btn-ghost", testid: "cancel-challenge", onclick: () => this.cancel(c) }, "Cancel"));
    }));
  }

  async copy(input) {
    try {
      await navigator.clipboard.writeText(input.value);
      this.app.notify("Invite link copied.", "info");
    } catch {
      // No clipboard (not a secure context, or refused): leave it selected for Ctrl+C.
      input.focus();
      input.select();
      this.app.notify("Press Ctrl+C to copy the selected link.", "info");
    }
  }

  // -- the "challenge someone" dialog ----------------------------------------------------------------

  /** Ask for rated/duration and send; `to` is a nickname or null (an open challenge, by link). */
  openDialog(to) {
    const rated = h("input", { type: "checkbox", checked: true, testid: "challenge-rated" });
    const duration = h("select", { testid: "challenge-duration" },
      h("option", { value: "" }, "Usual length"), DURATIONS.map(([secs, label]) => h("option", { value: String(secs) }, label)));
    const error = h("p", { class: "form-error", role: "alert", testid: "challenge-error", hidden: true });
    const send = h("button", { type: "submit", class: "btn btn-primary", testid: "challenge-send" }, to ? "Send challenge" : "Create link");
    const dialog = h("dialog", { class: "confirm challenge-dialog", testid: "challenge-dialog" },
      h("form", { onsubmit: async (e) => {
        e.preventDefault();
        send.disabled = true;
        error.hidden = true;
        try {
          const body = { to, rated: rated.checked };
          if (duration.value) body.duration = Number(duration.value);
          await this.create(body);
          dialog.close();
          this.app.notify(to ? `Challenge sent to ${to}.` : "Open challenge created: share its link.", "info");
          if (!to && location.hash !== "#/" && location.hash !== "") location.hash = "#/";
        } catch (err) {
          error.hidden = false;
          error.textContent = err.display ?? String(err);
        } finally {
          send.disabled = false;
        }
      } },
      h("h2", {}, to ? `Challenge ${to}` : "Invite anyone with a link"),
      h("p", { class: "muted" }, to ? `${to} gets it at once and may accept or decline.`
        : "Whoever opens the link first and accepts plays you."),
      h("label", { class: "check" }, rated, " Rated (changes both ratings)"),
      h("label", { class: "field" }, "Duration ", duration),
      error,
      h("div", { class: "confirm-actions" },
        h("button", { type: "button", class: "btn btn-ghost", onclick: () => dialog.close() }, "Cancel"), send)));
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
    return dialog;
  }
}

/** #/challenge/<id>: someone's invite link (or a named challenge), with Accept. */
export class ChallengeView {
  constructor(app, id) {
    this.app = app;
    this.id = id;
  }

  async load() {
    const c = await this.app.api.get(`/api/challenges/${encodeURIComponent(this.id)}`);
    this.challenge = c;
    const who = c.challenger;
    const mine = who.user_id === this.app.me.id;
    let body;
    if (c.status !== "pending") {
      const duelLink = c.duel_id && c.status === "accepted"
        ? h("a", { class: "btn", href: `#/duels/${c.duel_id}`, testid: "challenge-duel-link" }, "See the duel") : null;
      body = [h("p", { testid: "challenge-status", dataset: { status: c.status } }, `This challenge is ${c.status}.`), duelLink];
    } else if (mine) {
      body = [h("p", { testid: "challenge-status", dataset: { status: c.status } }, "This is your own challenge: share its link."),
        h("input", { class: "invite-url", readonly: true, value: inviteUrl(c), testid: "invite-url", "aria-label": "Invite link" })];
    } else {
      this.acceptButton = h("button", { type: "button", class: "btn btn-primary btn-big", testid: "accept-invite",
        onclick: () => this.accept() }, "Accept and play");
      body = [h("p", { testid: "challenge-status", dataset: { status: c.status } },
        `${c.rated ? "Rated" : "Unrated"} duel, ${durationText(c.duration_secs)}. The duel starts as soon as you accept.`),
      h("div", { class: "challenge-actions" }, this.acceptButton, h("a", { class: "btn btn-ghost", href: "#/" }, "Not now"))];
    }
    this.el = h("section", { class: "panel notice challenge-screen", testid: "challenge-screen", dataset: { challengeId: c.id } },
      h("h2", {}, `${who.nickname} (${ratingText(who.rating, who.provisional)}) ${c.to ? "challenges you" : "invites you to a duel"}`),
      body);
    return this;
  }

  async accept() {
    this.acceptButton.disabled = true;
    const answer = await this.app.challenges.accept(this.challenge);
    if (!answer && !this.destroyed) this.app.route();
  }

  destroy() {
    this.destroyed = true;
  }
}
