// The duel page: live for a player of an active duel (statement, countdown, editor, own
// submissions as they are judged, the opponent's verdicts, resign); watching for anyone else
// while it runs (both players' submissions' public facts and verdicts as they happen, from the
// duel's public log); read-only once finished (result, rating changes, both players'
// submissions with their code, and for its players the rematch offer).
//
// Own submissions are one list of rows, matched by server id or by client_temp_id, so the
// row drawn at Submit, the 202 answer, the submission_created event and the REST snapshot
// all land on the same row, and a row only ever moves forward (sending → pending → testing →
// judged).

import { DuelLogStream, newClientTempId, sleep } from "./api.js";
import { clock, confirmDialog, fill, h, renderMarkdown, signed, timeOf, verdictClass } from "./dom.js";
import { CodeEditor } from "./editor.js";

const STATE_RANK = { failed: -1, sending: 0, pending: 1, testing: 2, judged: 3 };
const SEND_BACKOFF_MIN_MS = 1000;
const SEND_BACKOFF_MAX_MS = 8000;
const TICK_MS = 250;
const DRAFT_SAVE_DELAY_MS = 300;

export class DuelView {
  constructor(app, duelId) {
    this.app = app;
    this.duelId = duelId;
    this.rows = [];
    this.sending = new Set();
    this.early = [];            // events that arrived while the first snapshot was loading
    this.loaded = false;
    this.destroyed = false;
    this.flushDraft = () => this.saveDraft(false, true);   // a reload must not lose a keystroke
    window.addEventListener("pagehide", this.flushDraft);
    this.mode = null;
    this.el = h("section", { class: "duel", testid: "duel-screen", dataset: { duelId: String(duelId) } });
  }

  get me() {
    return this.app.me;
  }

  async load() {
    const [duel, subs, languages] = await Promise.all([
      this.app.api.get(`/api/duels/${this.duelId}`),
      this.app.api.get(`/api/duels/${this.duelId}/submissions`),
      this.app.languages(),
    ]);
    this.languages = languages;
    this.apply(duel, subs.submissions);
    this.loaded = true;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    // Events newer than the snapshot come through here (a row only moves forward, so one
    // the snapshot already reflects changes nothing); a resync asked for meanwhile runs now.
    for (const event of this.early.splice(0)) await this.onEvent(event);
    if (this.needsRefresh) await this.refresh();
    return this;
  }

  /** Take the REST snapshot again (after a resync, or when the duel ends). */
  async refresh() {
    if (!this.loaded) {
      this.needsRefresh = true;
      return;
    }
    this.needsRefresh = false;
    const [duel, subs] = await Promise.all([
      this.app.api.get(`/api/duels/${this.duelId}`),
      this.app.api.get(`/api/duels/${this.duelId}/submissions`),
    ]);
    if (!this.destroyed) this.apply(duel, subs.submissions);
  }

  destroy() {
    this.destroyed = true;
    this.unfollow();
    window.removeEventListener("pagehide", this.flushDraft);
    clearInterval(this.timer);
    this.saveDraft(false, true);   // leaving the duel within the save delay keeps the last keystroke
    this.dropEditor();
  }

  // -- state ----------------------------------------------------------------------------------

  apply(duel, submissions) {
    this.duel = duel;
    this.mine = duel.players.find((p) => p.user_id === this.me.id) ?? null;
    this.theirs = this.mine ? duel.players.find((p) => p.user_id !== this.me.id) : null;
    const mode = duel.status === "active" ? (this.mine ? "live" : "watching") : "finished";
    for (const s of submissions ?? []) this.upsert(fromServer(s), false);
    if (mode !== this.mode) {
      this.mode = mode;
      this.build();
    }
    Object.assign(this.el.dataset, { taskId: String(duel.task.id), status: duel.status, mode });
    this.renderPlayers();
    this.renderResult();
    this.renderRows();
    this.renderOpponent();
    this.tick();
    if (mode === "live") this.resendOutbox();
    if (mode === "finished" && this.mine) this.app.store.forgetDuel(this.duelId);
    if (mode === "watching") this.follow();
    else this.unfollow();
  }

  // -- watching: the duel's public log ----------------------------------------------------------

  follow() {
    if (this.log || this.destroyed) return;
    this.log = new DuelLogStream(this.app.api, this.duelId, {
      onEvent: (event) => this.onPublicEvent(event),
      onReset: () => this.refresh(),
      onStatus: (state) => { this.el.dataset.stream = state; },
    }).start();
  }

  unfollow() {
    this.log?.stop();
    this.log = null;
  }

  onPublicEvent(event) {
    const d = event.data ?? {};
    if (event.type === "submission") {
      const state = d.verdict ? "judged" : STATE_RANK[d.state] > 0 ? d.state : d.status && d.status !== "pending" ? "testing" : "pending";
      this.upsert({ id: d.submission_id, user_id: d.user_id, language: d.language, submitted_at: d.submitted_at,
        state, status: d.status, verdict: d.verdict });
    } else if (event.type === "duel_finished") {
      return this.onEvent({ ...event, data: { ...d, duel_id: this.duelId } });
    }
    return undefined;
  }

  onEvent(event) {
    if (!this.loaded) {
      this.early.push(event);
      return undefined;
    }
    const d = event.data;
    switch (event.type) {
      case "submission_created":
        this.upsert({ id: d.submission_id, client_temp_id: d.client_temp_id, language: d.language,
          submitted_at: d.submitted_at, user_id: this.me.id, state: "pending" });
        break;
      case "submission_update":
        this.upsert({ id: d.submission_id, user_id: this.me.id, state: "testing", status: d.status });
        break;
      case "submission_verdict":
        this.upsert({ id: d.submission_id, user_id: this.me.id, state: "judged", verdict: d.verdict });
        break;
      case "opponent_verdict":
        this.renderOpponent();
        break;
      case "duel_finished":
        // Show the outcome at once from the event; the snapshot then adds ratings and code.
        this.apply({
          ...this.duel, status: "finished",
          result: { outcome: d.outcome, winner_id: d.winner_id, reason: d.reason },
          rating_changes: d.rating_changes,
          players: this.duel.players.map((p) => ({ ...p, rating_after: p.rating_before + (d.rating_changes?.[p.user_id] ?? 0) })),
        }, null);
        return this.refresh();
      default:
    }
    return undefined;
  }

  upsert(patch, render = true) {
    let row = (patch.id && this.rows.find((r) => r.id === patch.id))
      || (patch.client_temp_id && this.rows.find((r) => r.client_temp_id === patch.client_temp_id));
    if (!row) {
      row = { state: patch.state, localAt: Date.now() };
      this.rows.push(row);
    }
    for (const key of ["id", "client_temp_id", "language", "submitted_at", "solution", "user_id"]) {
      if (patch[key] !== null && patch[key] !== undefined) row[key] = patch[key];
    }
    if (patch.state === "failed") {
      if (row.state === "sending" || row.state === "failed") Object.assign(row, { state: "failed", error: patch.error });
    } else if (patch.state && STATE_RANK[patch.state] >= STATE_RANK[row.state]) {
      row.state = patch.state;
      if (patch.status) row.status = patch.status;
      if (patch.verdict) row.verdict = patch.verdict;
      if (patch.attempt !== undefined) row.attempt = patch.attempt;
    }
    if (render) this.renderRows();
    return row;
  }

  // -- submitting ------------------------------------------------------------------------------

  submit() {
    if (this.mode !== "live") return;
    const solution = this.editor.value;
    if (!solution.trim()) {
      this.app.notify("Write a solution first.");
      this.editor.focus();
      return;
    }
    const entry = { tempId: newClientTempId(), duelId: this.duelId, language: this.languageSelect.value, solution };
    this.app.store.addToOutbox(entry);
    this.upsert({ client_temp_id: entry.tempId, language: entry.language, solution, user_id: this.me.id, state: "sending" });
    this.send(entry);
  }

  /** POST until the server has it; every attempt carries the same client_temp_id. */
  async send(entry) {
    if (this.sending.has(entry.tempId)) return;
    this.sending.add(entry.tempId);
    let backoff = SEND_BACKOFF_MIN_MS;
    try {
      for (let attempt = 1; !this.destroyed; attempt++) {
        try {
          const answer = await this.app.api.post(`/api/duels/${this.duelId}/submit`,
            { solution: entry.solution, language: entry.language, client_temp_id: entry.tempId });
          this.app.store.removeFromOutbox(entry.tempId);
          this.upsert({ client_temp_id: entry.tempId, id: answer.submission_id, state: "pending" });
          return;
        } catch (err) {
          if (!err.retryable) {
            this.app.store.removeFromOutbox(entry.tempId);
            this.upsert({ client_temp_id: entry.tempId, state: "failed", error: err.display });
            this.app.failed("Submission not accepted", err);
            return;
          }
          this.upsert({ client_temp_id: entry.tempId, state: "sending", attempt });
          await sleep(err.retryAfterMs ?? backoff);
          backoff = Math.min(backoff * 2, SEND_BACKOFF_MAX_MS);
        }
      }
    } finally {
      this.sending.delete(entry.tempId);
    }
  }

  /** Submissions sent before a reload whose answer never came: the server decides if they exist. */
  resendOutbox() {
    for (const entry of this.app.store.outbox(this.duelId)) {
      const row = this.rows.find((r) => r.client_temp_id === entry.tempId);
      if (row?.id) {
        this.app.store.removeFromOutbox(entry.tempId);
      } else {
        this.upsert({ client_temp_id: entry.tempId, language: entry.language, solution: entry.solution,
          user_id: this.me.id, state: "sending" });
        this.send(entry);
      }
    }
  }

  async resign() {
    const yes = await confirmDialog("Resign this duel? Your opponent wins and both ratings change.", "Resign");
    if (!yes || this.destroyed) return;
    try {
      await this.app.api.post(`/api/duels/${this.duelId}/resign`);
      await this.refresh();
    } catch (err) {
      this.app.failed("Could not resign", err);
    }
  }

  // -- building ---------------------------------------------------------------------------------

  build() {
    const duel = this.duel;
    this.dropEditor();
    this.slots = [h("div", { class: "slot" }), h("div", { class: "slot slot-right" })];
    this.countdown = h("div", { class: "countdown", testid: "countdown" });
    this.resultBox = h("div", { class: "result", testid: "duel-result", hidden: true });
    const task = h("article", { class: "panel task", testid: "task" },
      h("div", { class: "task-head" },
        h("h2", { class: "task-title", testid: "task-title" }, duel.task.title ?? `Task ${duel.task.id}`),
        duel.task.time_limit_ms ? h("span", { class: "muted" }, `Time limit ${duel.task.time_limit_ms / 1000} s`) : null),
      h("div", { class: "statement", testid: "task-statement" }, renderMarkdown(duel.task.statement)));
    let side;
    if (this.mode === "live") {
      side = this.buildEditorSide();
    } else {
      this.rowsList = h("ol", { class: "subs", testid: "duel-submissions" });
      side = h("div", { class: "side" },
        h("div", { class: "panel" }, h("h3", {}, "Submissions"),
          this.mode === "watching"
            ? h("p", { class: "muted small" }, "Live: every submission and verdict as it happens; the code is shown once the duel is over.")
            : null,
          this.rowsList));
      this.opponentList = null;
    }
    const center = h("div", { class: "duel-center" }, h("span", { class: "versus" }, "vs"), this.countdown,
      duel.rated === false ? h("span", { class: "tag", testid: "unrated-tag" }, "unrated") : null,
      this.mode === "watching" ? h("span", { class: "tag tag-live", testid: "watching-tag" }, "watching") : null,
      this.mode === "live"
        ? h("button", { type: "button", class: "btn btn-ghost btn-danger-text", testid: "resign-button", onclick: () => this.resign() }, "Resign")
        : null);
    fill(this.el,
      h("div", { class: "duel-bar" }, this.slots[0], center, this.slots[1]),
      this.resultBox,
      h("div", { class: "duel-body" }, task, side));
  }

  buildEditorSide() {
    const draft = this.app.store.draft(this.duelId);
    const preferred = draft?.language ?? localStorage.getItem("duely.language");
    this.languageSelect = h("select", { testid: "language-select", onchange: () => this.languageChanged() },
      this.languages.map((l) => h("option", { value: l.id }, l.name)));
    if (this.languages.some((l) => l.id === preferred)) this.languageSelect.value = preferred;
    this.editor = new CodeEditor({
      doc: draft?.code ?? "", language: this.languageSelect.value, label: "Solution", testid: "code-editor",
      placeholder: "Write your solution here. It reads standard input and writes standard output.",
      onChange: () => this.saveDraft(false), onSubmit: () => this.submit(),
    });
    this.rowsList = h("ol", { class: "subs", testid: "my-submissions" });
    this.opponentList = h("ol", { class: "subs", testid: "opponent-verdicts" });
    this.submitButton = h("button", { type: "button", class: "btn btn-primary", testid: "submit-button", onclick: () => this.submit() }, "Submit");
    return h("div", { class: "side" },
      h("div", { class: "panel editor-panel" },
        h("div", { class: "editor-toolbar" },
          h("label", {}, "Language ", this.languageSelect),
          h("span", { class: "muted hint" }, "Tab indents (Esc, Tab leaves) · Ctrl+Enter submits"),
          this.submitButton),
        this.editor.dom),
      h("div", { class: "panel" }, h("h3", {}, "Your submissions"), this.rowsList),
      h("div", { class: "panel" }, h("h3", {}, "Opponent"), this.opponentList));
  }

  dropEditor() {
    this.editor?.destroy();
    this.editor = null;
  }

  languageChanged() {
    this.editor.setLanguage(this.languageSelect.value);
    this.saveDraft(true);
  }

  saveDraft(languageChanged, now = false) {
    if (this.mode !== "live") return;
    if (languageChanged) localStorage.setItem("duely.language", this.languageSelect.value);
    clearTimeout(this.draftTimer);
    const save = () => {
      // Not once the duel is over, nor after a log-out (it drops the store before this view).
      if (this.mode !== "live" || !this.editor || !this.app.store) return;
      this.app.store.saveDraft(this.duelId, this.languageSelect.value, this.editor.value);
    };
    if (now || languageChanged) save();
    else this.draftTimer = setTimeout(save, DRAFT_SAVE_DELAY_MS);
  }

  // -- rendering --------------------------------------------------------------------------------

  tick() {
    if (!this.duel) return;
    if (this.duel.status !== "active") {
      this.countdown.textContent = this.duel.finished_at ? `Finished at ${timeOf(this.duel.finished_at)}` : "Finished";
      this.countdown.dataset.state = "finished";
      return;
    }
    const left = Date.parse(this.duel.deadline) - this.app.api.now();
    this.countdown.textContent = left > 0 ? clock(left) : "0:00 · judging the last submissions";
    this.countdown.dataset.state = left <= 0 ? "over" : left < 60000 ? "urgent" : "running";
    if (this.mode === "live") this.submitButton.disabled = left <= 0;
  }

  renderPlayers() {
    const ordered = this.mine ? [this.mine, this.theirs] : this.duel.players;
    const cards = ordered.filter(Boolean).map((p, i) => {
      const role = this.mine ? (i === 0 ? "me" : "opponent") : "player";
      const delta = this.duel.rating_changes?.[p.user_id];
      return h("div", { class: `player player-${role}`, testid: "player-card", dataset: { role, userId: String(p.user_id) } },
        h("div", { class: "player-label muted" }, role === "me" ? "You" : role === "opponent" ? "Opponent" : "Player"),
        h("div", { class: "player-name", testid: "player-name" }, p.nickname),
        h("div", { class: "player-rating", testid: "player-rating" },
          p.rating_after !== null && p.rating_after !== undefined && delta !== undefined
            ? [`${p.rating_before} → ${p.rating_after} `, h("span", { class: deltaClass(delta) }, signed(delta))]
            : String(p.rating_before)),
        this.stakesLine(p.user_id));
    });
    this.slots.forEach((slot, i) => fill(slot, cards[i] ?? null));
  }

  // What this player wins or loses, announced at the start (the same rule rates the result).
  stakesLine(userId) {
    const stake = this.duel.stakes?.[userId];
    if (!stake || this.duel.status === "finished" || this.duel.rated === false) return null;
    return h("div", { class: "muted stakes", testid: "player-stakes" },
      `win ${signed(stake.win)} · draw ${signed(stake.draw)} · loss ${signed(stake.loss)}`);
  }

  renderResult() {
    const duel = this.duel;
    if (duel.status !== "finished" || !duel.result) {
      this.resultBox.hidden = true;
      return;
    }
    const { outcome, winner_id: winnerId, reason } = duel.result;
    const name = (id) => duel.players.find((p) => p.user_id === id)?.nickname ?? "?";
    let mood = outcome === "draw" ? "draw" : "win";
    let title = outcome === "draw" ? "Draw" : `${name(winnerId)} won`;
    if (this.mine && outcome !== "draw") {
      mood = winnerId === this.me.id ? "won" : "lost";
      title = mood === "won" ? "You won!" : "You lost";
    }
    const loser = duel.players.find((p) => p.user_id !== winnerId);
    const why = {
      accepted: `${name(winnerId)} was first with an Accepted solution.`,
      timeout: "Time ran out with no Accepted solution.",
      resign: `${loser ? loser.nickname : "A player"} resigned.`,
    }[reason] ?? reason;
    this.resultBox.hidden = false;
    this.resultBox.className = `result result-${mood}`;
    this.resultBox.dataset.outcome = mood;
    fill(this.resultBox,
      h("div", { class: "result-main" },
        h("div", { class: "result-title", testid: "result-title" }, title),
        h("div", { class: "result-reason", testid: "result-reason" }, why)),
      duel.rated === false ? h("p", { class: "muted", testid: "unrated-note" }, "Unrated duel: no rating changed.") : null,
      duel.rated === false ? null : h("ul", { class: "rating-changes" }, duel.players.map((p) => {
        const delta = duel.rating_changes?.[p.user_id] ?? 0;
        return h("li", { testid: "rating-change", dataset: { userId: String(p.user_id), delta: String(delta) } },
          h("span", { class: "rc-name" }, p.nickname), " ",
          h("span", { class: "muted" }, `${p.rating_before} → ${p.rating_after ?? p.rating_before + delta}`), " ",
          h("strong", { class: deltaClass(delta) }, signed(delta)));
      })),
      this.resultActions = this.mine ? h("div", { class: "result-actions", testid: "result-actions" }) : null);
    this.renderRematch();
  }

  onChallenges() {
    if (this.duel?.status === "finished") this.renderRematch();
  }

  /** After the duel: offer a rematch, or answer the opponent's offer, or wait for the answer. */
  renderRematch() {
    if (!this.resultActions) return;
    const { incoming, outgoing } = this.app.challenges.rematchOf(this.duelId);
    const them = this.theirs?.nickname ?? "Your opponent";
    const other = [
      h("button", { type: "button", class: "btn", testid: "play-again-button", onclick: () => this.app.findDuel() }, "Find another duel"),
      h("a", { class: "btn btn-ghost", href: "#/history" }, "History")];
    if (incoming) {
      fill(this.resultActions,
        h("span", { class: "rematch-note", testid: "rematch-offered" }, `${them} offers a rematch`),
        h("button", { type: "button", class: "btn btn-primary", testid: "accept-rematch", onclick: () => this.app.challenges.accept(incoming) }, "Accept"),
        h("button", { type: "button", class: "btn", testid: "decline-rematch", onclick: () => this.app.challenges.decline(incoming, "generic") }, "Decline"));
    } else if (outgoing) {
      fill(this.resultActions,
        h("span", { class: "rematch-note muted", testid: "rematch-waiting" }, `Rematch offered; waiting for ${them}…`),
        h("button", { type: "button", class: "btn btn-ghost", testid: "cancel-rematch", onclick: () => this.app.challenges.cancel(outgoing) }, "Cancel"),
        other);
    } else {
      fill(this.resultActions,
        h("button", { type: "button", class: "btn btn-primary", testid: "rematch-button", onclick: () => this.rematch() }, "Rematch"),
        other);
    }
  }

  async rematch() {
    try {
      const c = await this.app.api.post(`/api/duels/${this.duelId}/rematch`);
      if (c.duel_id && c.status === "accepted") {
        location.hash = `#/duels/${c.duel_id}`;
        return;
      }
      this.app.challenges.outgoing.set(c.id, c);
      this.app.challenges.changed();
    } catch (err) {
      this.app.failed("Could not offer a rematch", err);
    }
  }

  renderRows() {
    if (!this.rowsList || !this.duel) return;
    const live = this.mode === "live";
    // Live: own rows, sent or not. Afterwards: what the server has, both players'.
    const rows = this.rows
      .filter((r) => (live ? r.user_id === undefined || r.user_id === this.me.id : Boolean(r.id)))
      .sort((a, b) => at(b) - at(a));
    const name = (id) => this.duel.players.find((p) => p.user_id === id)?.nickname ?? "";
    fill(this.rowsList, rows.length ? rows.map((r) => {
      const text = rowText(r);
      return h("li", {
        class: `sub sub-${r.state} ${verdictClass(r.verdict)}`,
        testid: live ? "submission-row" : "duel-submission",
        dataset: { state: r.state, clientTempId: r.client_temp_id ?? "", submissionId: r.id ?? "",
          userId: String(r.user_id ?? ""), verdict: r.verdict ?? "" },
      },
      h("div", { class: "sub-line" },
        live ? null : h("span", { class: "sub-who", testid: "submission-player" }, name(r.user_id)),
        h("span", { class: "sub-status", testid: "submission-status" }, text),
        h("span", { class: "sub-meta muted" }, live || !r.language ? "" : `${this.languageName(r.language)} · `,
          r.submitted_at ? timeOf(r.submitted_at) : "now")),
      r.solution ? h("details", { class: "sub-code" }, h("summary", {}, `Code · ${this.languageName(r.language)}`),
        h("pre", { testid: "submission-code" }, r.solution)) : null);
    }) : h("li", { class: "empty muted" }, live ? "Nothing submitted yet." : "No submissions."));
  }

  renderOpponent() {
    if (!this.opponentList) return;
    const verdicts = this.app.store.opponentVerdicts(this.duelId);
    fill(this.opponentList, verdicts.length
      ? [...verdicts].reverse().map((v) => h("li", {
        class: `sub sub-judged ${verdictClass(v.verdict)}`, testid: "opponent-verdict", dataset: { verdict: v.verdict },
      }, h("div", { class: "sub-line" },
        h("span", { class: "sub-status" }, v.verdict),
        h("span", { class: "sub-meta muted" }, timeOf(v.submitted_at)))))
      : h("li", { class: "empty muted" }, `${this.theirs?.nickname ?? "Your opponent"} has no verdicts yet.`));
  }

  languageName(id) {
    return (this.languages ?? []).find((l) => l.id === id)?.name ?? id ?? "";
  }
}

function fromServer(s) {
  const state = s.verdict ? "judged" : s.status === "pending" ? "pending" : "testing";
  return { id: s.id, client_temp_id: s.client_temp_id, language: s.language, submitted_at: s.submitted_at,
    solution: s.solution, user_id: s.user_id, state, status: s.status, verdict: s.verdict };
}

function rowText(r) {
  switch (r.state) {
    case "sending": return r.attempt ? `Sending… (retry ${r.attempt})` : "Sending…";
    case "pending": return "Waiting for the judge";
    case "testing": return r.status && r.status !== "testing" ? r.status : "Testing…";
    case "judged": return r.verdict;
    case "failed": return `Not sent: ${r.error}`;
    default: return r.state;
  }
}

function at(row) {
  // Rows the server has not stored yet sort as the newest.
  return row.submitted_at ? Date.parse(row.submitted_at) : 1e15 + row.localAt;
}

function deltaClass(delta) {
  return delta > 0 ? "up" : delta < 0 ? "down" : "same";
}
