// What the page keeps in localStorage for one user, beyond the token and the event id (api.js):
// - drafts: the code being written in a duel, so a reload does not lose it;
// - outbox: submissions not yet acknowledged (202), re-sent with the same client_temp_id
//   after a reload (the server returns the same submission instead of making a second);
// - the opponent's verdicts of an active duel: they exist only as events (the REST snapshot
//   shows the opponent's submissions only after the duel), and a reload does not replay
//   events already processed.

const read = (key, fallback) => {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
};

const write = (key, value) => {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the page still works, a reload just forgets more.
  }
};

export class UserStore {
  constructor(userId) {
    this.prefix = `duely.u${userId}.`;
  }

  draft(duelId) {
    return read(`${this.prefix}draft.${duelId}`, null);
  }

  saveDraft(duelId, language, code) {
    write(`${this.prefix}draft.${duelId}`, { language, code });
  }

  outbox(duelId) {
    return read(`${this.prefix}outbox`, []).filter((s) => s.duelId === duelId);
  }

  addToOutbox(entry) {
    write(`${this.prefix}outbox`, [...read(`${this.prefix}outbox`, []), entry]);
  }

  removeFromOutbox(tempId) {
    write(`${this.prefix}outbox`, read(`${this.prefix}outbox`, []).filter((s) => s.tempId !== tempId));
  }

  opponentVerdicts(duelId) {
    return read(`${this.prefix}opp.${duelId}`, []);
  }

  /** Keeps one entry per event id; returns false when it was already known. */
  addOpponentVerdict(duelId, eventId, data) {
    const list = this.opponentVerdicts(duelId);
    if (list.some((v) => v.eventId === eventId)) return false;
    list.push({ eventId, verdict: data.verdict, submitted_at: data.submitted_at });
    list.sort((a, b) => a.eventId - b.eventId);
    write(`${this.prefix}opp.${duelId}`, list);
    return true;
  }

  /** Forget a duel's working state (once it is finished, the server shows everything). */
  forgetDuel(duelId) {
    localStorage.removeItem(`${this.prefix}draft.${duelId}`);
    localStorage.removeItem(`${this.prefix}opp.${duelId}`);
    write(`${this.prefix}outbox`, read(`${this.prefix}outbox`, []).filter((s) => s.duelId !== duelId));
  }

  /** Forget every duel but `keepDuelId` (a stale key from a duel seen on another day). */
  forgetAllBut(keepDuelId) {
    for (let i = localStorage.length - 1; i >= 0; i--) {
      const key = localStorage.key(i);
      const m = key?.startsWith(this.prefix) && key.slice(this.prefix.length).match(/^(?:draft|opp)\.(\d+)$/);
      if (m && Number(m[1]) !== keepDuelId) localStorage.removeItem(key);
    }
    write(`${this.prefix}outbox`, read(`${this.prefix}outbox`, []).filter((s) => s.duelId === keepDuelId));
  }
}
