// The client's bookkeeping without sockets or timers: the reconnect policy, room
// cursors (what was delivered, what to replay after a reconnect) and meeting seats.
// The same rules as the Trio client (python/rushhour/client/_state.py, _meetings.py).

/** Close codes after which a new connection may succeed. 1000 is here because a server
 * only closes normally on its own for an idle timeout; everything not listed (4001
 * unauthorized, 1008 policy …) would fail again. */
export const RECONNECT_CODES = new Set([1000, 1001, 1005, 1006, 1011, 1012, 1013, 1014, 4008, 4009]);
/** The session was resumed on another connection: resuming it back would fence that
 * one out, which would resume again, and so on. */
export const CLOSE_REPLACED = 4009;
/** "Connection dropped": no close frame, or no connection at all. */
export const CLOSE_ABNORMAL = 1006;
/** First backoff ceiling: small, since most drops are one-off. */
export const BACKOFF_BASE_MS = 200;
/** Error codes the server answers without acting: the request may be sent again after
 * `retry_after_ms`. */
export const RETRY_CODES = new Set(['rate_limited', 'overloaded']);
/** Meeting events that end our own seat: rejoining after them would fail (`ended`,
 * `removed`) or fence out the connection that holds it now (`replaced`). */
const SEAT_ENDING_EVENTS = new Set(['ended', 'removed', 'replaced']);

/**
 * Exponential backoff with full jitter: uniform in [0, min(cap, base · 2^attempt)].
 * Full jitter spreads clients dropped at once (a server restart) over the window
 * instead of bunching them at its edges.
 */
export function backoffDelay(attempt, capMs, random = Math.random) {
  return random() * Math.min(capMs, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 32));
}

/** The `retry_after_ms` of a 1013 close reason (JSON `{"retry_after_ms": M}`), or null. */
export function retryAfterFromReason(reason) {
  try {
    const value = JSON.parse(reason)?.retry_after_ms;
    return Number.isInteger(value) && value >= 0 ? value : null;
  } catch {
    return null;
  }
}

/** Per room: the last seq delivered to the application, and whether to subscribe again.
 * A cursor never moves back, so a message is never delivered twice, whether it comes
 * from a replay, a resubscription racing a resumed session, or a stray push. */
export class Cursors {
  #cursors = new Map();
  #subscribed = new Set();

  /** The `since` to send: an explicit one below the cursor is raised to it, since what
   * lies between was delivered already. */
  sinceFor(room, since) {
    const cursor = this.#cursors.get(room);
    return since == null || cursor == null ? since : Math.max(since, cursor);
  }

  /** A subscribe reply arrived; the pushes that follow start after `since` or now. */
  subscribed(room, since, reply) {
    const start = since ?? reply.last_seq ?? 0;
    this.#cursors.set(room, Math.max(this.#cursors.get(room) ?? start, start));
    this.#subscribed.add(room);
  }

  unsubscribed(room) {
    this.#subscribed.delete(room);
  }

  /** Whether a pushed `msg` is new to the application; if so, it counts as delivered. */
  accept(msg) {
    const cursor = this.#cursors.get(msg.room);
    if (cursor != null && msg.seq <= cursor) return false;
    this.#cursors.set(msg.room, msg.seq);
    return true;
  }

  /** [room, since] of every subscribed room, for a new connection. */
  resubscriptions() {
    return [...this.#subscribed].map((room) => [room, this.#cursors.get(room)]);
  }
}

/** The meeting seats of this client: the ones it holds (rejoined after a reconnect) and
 * their tokens, kept in `storage` too so that a reloaded page takes the same seat. */
export class Seats {
  #held = new Map();
  #storage;
  #prefix = '';

  /** @param {Storage | null} storage where seat tokens outlive the page */
  constructor(storage) {
    this.#storage = storage;
  }

  /** Seat tokens are per tenant and user: another sign-in in the tab finds none. */
  setOwner(tenant, user) {
    const prefix = `rushhour.seat:${tenant}:${user}:`;
    if (prefix !== this.#prefix) this.#held.clear(); // a token for another user
    this.#prefix = prefix;
  }

  /** The seat token to join `meeting` with: the held one, else a stored one. */
  token(meeting) {
    return this.#held.get(meeting)?.token ?? this.#load(meeting)?.token ?? null;
  }

  /** A join reply: the seat is held, with its fresh token. */
  joined(reply) {
    const {meeting, participant, seat: token} = reply;
    if (typeof meeting !== 'string' || typeof participant !== 'string' || typeof token !== 'string') return;
    const record = {participant, token};
    this.#held.set(meeting, record);
    this.#save(meeting, record);
  }

  /** Drops the seat of `meeting` (only `participant`'s, when given). */
  forget(meeting, participant = null) {
    const seat = this.#held.get(meeting) ?? this.#load(meeting);
    if (seat && participant != null && seat.participant !== participant) return;
    this.#held.delete(meeting);
    this.#storage?.removeItem(this.#prefix + meeting);
  }

  /** A `meeting.event`: forgets the seat it ends, if it is ours. */
  event(frame) {
    if (!SEAT_ENDING_EVENTS.has(frame.event)) return;
    if (frame.event === 'ended') this.forget(frame.meeting);
    else if (typeof frame.participant?.participant === 'string') this.forget(frame.meeting, frame.participant.participant);
  }

  /** [meeting, token] of every seat held, for a new connection. */
  rejoins() {
    return [...this.#held].map(([meeting, seat]) => [meeting, seat.token]);
  }

  #load(meeting) {
    try {
      return JSON.parse(this.#storage?.getItem(this.#prefix + meeting) ?? 'null');
    } catch {
      return null;
    }
  }

  #save(meeting, record) {
    try {
      this.#storage?.setItem(this.#prefix + meeting, JSON.stringify(record));
    } catch {
      // Storage full or disabled: the seat still works until the page goes.
    }
  }
}

/** Acks and reads waiting to be sent, batched: cursors are cumulative, so the newest seq
 * per room carries every move before it. */
export class CursorBatch {
  #out = {read: new Map(), ack: new Map()}; // room → seq, to send
  #sent = {read: new Map(), ack: new Map()}; // room → seq, sent

  /** Queues a move of `op` (`ack` or `read`); false if it moves nothing new. */
  add(op, room, seq) {
    if (seq <= Math.max(this.#sent[op].get(room) ?? 0, this.#out[op].get(room) ?? 0)) return false;
    this.#out[op].set(room, seq);
    return true;
  }

  /** The frames to send now (they count as sent); no ack a read of the room covers. */
  take() {
    const frames = [];
    for (const op of ['read', 'ack']) {
      for (const [room, seq] of this.#out[op]) {
        if (op === 'ack' && (this.#sent.read.get(room) ?? 0) >= seq) continue;
        frames.push({op, room, seq});
        this.#sent[op].set(room, seq);
      }
      this.#out[op].clear();
    }
    return frames;
  }

  /** Queues every cursor sent again: a server that crashed may have lost the moves of
   * its last interval (they are written to its log in batches too). */
  resend() {
    for (const op of ['read', 'ack']) {
      for (const [room, seq] of this.#sent[op]) if (!this.#out[op].has(room)) this.#out[op].set(room, seq);
      this.#sent[op].clear();
    }
  }
}
