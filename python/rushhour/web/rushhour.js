/**
 * rushhour.js: the browser client of a rushhour server (protocol v1). A plain ES module,
 * no build step: `import {Client} from '/rushhour.js'`.
 *
 * One `Client` holds one WebSocket that survives drops: it reconnects with jittered
 * exponential backoff (waiting out a server's `retry_after_ms` when it is overloaded),
 * resumes its session, subscribes again from the last message it delivered (dropping
 * any it delivered already), writes again the requests a drop left unanswered (sends
 * keep their `cid`, so the server stores them once), and takes its meeting seats back.
 * See docs/web-client.md.
 * @module rushhour
 */

import {ConnectionClosedError, Requests, ServerError} from './rushhour-requests.js';
import {
  CLOSE_ABNORMAL,
  CLOSE_REPLACED,
  CursorBatch,
  Cursors,
  RECONNECT_CODES,
  RETRY_CODES,
  Seats,
  backoffDelay,
  retryAfterFromReason,
} from './rushhour-state.js';

export {ConnectionClosedError, ServerError};

/** Time allowed to one attempt: TCP, WebSocket handshake and `hello` up to `welcome`. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Ceiling of the backoff between attempts (a server's `retry_after_ms` is obeyed as given). */
const MAX_BACKOFF_MS = 30_000;
/** Acks and reads go out at most this often: cursors are cumulative, so one frame per
 * room carries every move of the interval (the protocol asks for "a few a second"). */
const CURSOR_FLUSH_MS = 250;
/** Wait before retrying a refused request whose error carries no `retry_after_ms`. */
const DEFAULT_RETRY_AFTER_MS = 100;

/** The WebSocket URL of the server that served the page. */
export function defaultUrl(location = globalThis.location) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

/** A fresh message id (crypto.randomUUID needs a secure context; this does not). */
export function newCid() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return 'c-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function decode(data) {
  if (typeof data !== 'string') return null; // binary frames are reserved; v1 sends none
  try {
    const frame = JSON.parse(data);
    return frame && typeof frame.op === 'string' ? frame : null;
  } catch {
    return null;
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string | (() => Promise<string>)} token The JWT, or an async function
 *   returning a fresh one, called before every (re)connection.
 * @property {string} [url] The WebSocket URL; default: `/ws` of the page's server.
 * @property {number} [connectTimeoutMs=10000] Time allowed to one connection attempt.
 * @property {number} [maxBackoffMs=30000] Ceiling of the jittered backoff.
 * @property {boolean} [autoAck=true] Ack every message delivered (batched).
 * @property {Storage | null} [seatStorage=sessionStorage] Where meeting seat tokens are
 *   kept, so that a reloaded page rejoins the same seat; null keeps them in memory.
 */

/**
 * A connection to a rushhour server that survives drops.
 *
 * Events (listen with `on(type, handler)`; the handler gets the frame or detail):
 * - `state`: `{state, code?, reason?, retryAt?, overloaded?, queuePos?}` where `state` is
 *   `connecting`, `open`, `waiting` (until `retryAt`, ms since the epoch; `overloaded`
 *   when the server asked for the wait) or `closed` (for good, e.g. 4001).
 * - `welcome`: the `welcome` frame, plus `reconnect` (true after the first).
 * - `msg`: each room's messages in seq order, never twice.
 * - `receipts`, `presence`, `meeting.event`, `signal`: the pushed frames as they are.
 * - `rejoined`: `{meeting, ...join reply}`, a seat taken back after a reconnect.
 * - `seatlost`: `{meeting, code, message}`, a seat that could not be taken back.
 * - `error`: an error frame that answers no request (e.g. a refused ack).
 */
export class Client extends EventTarget {
  /** The user id, from `welcome`. */
  user = '';
  /** The tenant id, from `welcome`. */
  tenant = '';
  /** The session token, resumed on reconnect. */
  session = '';
  /** `idle`, `connecting`, `open`, `waiting` or `closed`. */
  state = 'idle';

  #url;
  #token;
  #connectTimeoutMs;
  #maxBackoffMs;
  #autoAck;
  #requests = new Requests();
  #cursors = new Cursors();
  #seats;
  #ws = null;
  #welcomed = false; // #ws said welcome: requests are written to it
  #everWelcomed = false;
  #generation = 0;
  #attempt = 0;
  #resume = true;
  #closing = false;
  #retryTimer = null;
  #firstWelcome = null;
  #cursorTimer = null;
  #cursorBatch = new CursorBatch();

  /** @param {ClientOptions} options */
  constructor({
    token,
    url = defaultUrl(),
    connectTimeoutMs = CONNECT_TIMEOUT_MS,
    maxBackoffMs = MAX_BACKOFF_MS,
    autoAck = true,
    seatStorage = globalThis.sessionStorage ?? null,
  }) {
    super();
    this.#url = url;
    this.#token = token;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#maxBackoffMs = maxBackoffMs;
    this.#autoAck = autoAck;
    this.#seats = new Seats(seatStorage);
  }

  /**
   * Starts connecting (once; later calls return the same promise).
   * @returns {Promise<object>} the first `welcome`; rejects with `ConnectionClosedError`
   *   if the server refuses for good (4001: bad token) before it.
   */
  connect() {
    if (!this.#firstWelcome) {
      this.#firstWelcome = Promise.withResolvers();
      this.#firstWelcome.promise.catch(() => {}); // reported through `state` as well
      this.#open();
    }
    return this.#firstWelcome.promise;
  }

  /**
   * Listens to an event (see the class doc).
   * @param {string} type
   * @param {(detail: any) => void} handler
   * @returns {() => void} stops listening
   */
  on(type, handler) {
    const listener = (event) => handler(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Sends any request frame and resolves with its reply (without `op` and `id`).
   * @param {object} frame with `op`; an `id` is assigned
   * @param {{idempotent?: boolean}} [options] `idempotent`: write it again after a drop,
   *   and after `rate_limited` / `overloaded` once `retry_after_ms` has passed.
   * @returns {Promise<object>} rejects with `ServerError` or `ConnectionClosedError`
   */
  request(frame, {idempotent = false} = {}) {
    return this.#request(frame, {retry: idempotent});
  }

  /**
   * Subscribes to a room; the client subscribes again after every reconnect, from the
   * last message it delivered.
   * @param {string} room
   * @param {{since?: number}} [options] replay the messages after `since` first
   * @returns {Promise<object>} `{room, last_seq, first_seq, read_seq, delivered_seq, truncated?}`
   */
  subscribe(room, {since} = {}) {
    const from = this.#cursors.sinceFor(room, since);
    const frame = {op: 'subscribe', room, ...(from != null && {since: from})};
    const onReply = (reply) => reply.op === 'reply' && this.#cursors.subscribed(room, from, reply);
    return this.#request(frame, {retry: true, onReply});
  }

  /** Stops the pushes of a room; the user stays a member. @param {string} room */
  unsubscribe(room) {
    return this.#unsubscribe('unsubscribe', room);
  }

  /** Ends the user's membership of a room. @param {string} room */
  leave(room) {
    return this.#unsubscribe('leave', room);
  }

  /**
   * Sends a message once: a retry (after a drop, or `rate_limited`) reuses the `cid`,
   * and the server stores it once.
   * @param {string} room
   * @param {any} body any JSON value, at most 64 KiB encoded
   * @param {{cid?: string}} [options] the message's client id; default: a random one
   * @returns {Promise<{seq: number, ts: number, duplicate: boolean, cid: string}>}
   */
  async send(room, body, {cid = newCid()} = {}) {
    const reply = await this.#request({op: 'send', room, cid, body}, {retry: true});
    return {...reply, cid};
  }

  /**
   * The newest `limit` messages with seq < `before`, ascending.
   * @returns {Promise<object[]>} `msg` objects
   */
  async history(room, {before, limit = 50} = {}) {
    const frame = {op: 'history', room, limit, ...(before != null && {before})};
    return (await this.#request(frame, {retry: true})).messages ?? [];
  }

  /** Marks `room` delivered up to `seq` (batched; cursors never move back). */
  ack(room, seq) {
    this.#queueCursor('ack', room, seq);
  }

  /** Marks `room` read (and delivered) up to `seq` (batched). */
  read(room, seq) {
    this.#queueCursor('read', room, seq);
  }

  /** Sends the batched acks and reads now (e.g. when the page goes away). */
  flush() {
    this.#flushCursors();
  }

  /** @returns {Promise<{seq, members, delivered, read}>} counts of members past `seq` */
  receipts(room, seq) {
    return this.#request({op: 'receipts', room, seq}, {retry: true});
  }

  /**
   * Every member that has read `seq` (with `unread`: has not), in user order, all pages.
   * @returns {Promise<string[]>}
   */
  async readBy(room, seq, {unread = false, limit = 100} = {}) {
    const users = [];
    for (let after = null; ; ) {
      const frame = {op: unread ? 'unread_by' : 'read_by', room, seq, limit, ...(after != null && {after})};
      const reply = await this.#request(frame, {retry: true});
      users.push(...reply.users);
      after = reply.next;
      if (after == null) return users;
    }
  }

  /** @returns {Promise<Object<string, {last_seq, read_seq, unread}>>} every room of the user */
  async unread() {
    return (await this.#request({op: 'unread'}, {retry: true})).rooms;
  }

  /** @returns {Promise<{online: string[], count: number}>} */
  presence(room) {
    return this.#request({op: 'presence', room}, {retry: true});
  }

  /**
   * Creates a meeting; the caller is its host. With `key`, creating is idempotent (and
   * written again after a drop).
   * @returns {Promise<{meeting: string, host: string, created: boolean}>}
   */
  createMeeting({title = '', key, maxParticipants, mode} = {}) {
    const frame = {op: 'meeting.create', title, ...(key != null && {key})};
    if (maxParticipants != null) frame.max_participants = maxParticipants;
    if (mode != null) frame.mode = mode;
    return this.#request(frame, {retry: key != null, retryRefused: true});
  }

  /**
   * Joins a meeting, with the seat this tab held before when there is one (a reload
   * rejoins the same seat: same participant id and role); after a reconnect the client
   * takes the seat back by itself (`rejoined`, or `seatlost`).
   * @param {string} meeting
   * @param {{seat?: string}} [options] a seat token from elsewhere
   * @returns {Promise<object>} `{meeting, participant, seat, role, roster, epoch, mode}`
   */
  async joinMeeting(meeting, {seat} = {}) {
    if (!this.#everWelcomed) await this.connect(); // stored seats are per user: who is it?
    const token = seat ?? this.#seats.token(meeting);
    if (token) {
      try {
        return await this.#join(meeting, token);
      } catch (error) {
        // A stored seat that ended (left, expired) or cannot be used: join afresh.
        if (seat || !(error instanceof ServerError) || !['not_found', 'forbidden'].includes(error.code)) throw error;
        this.#seats.forget(meeting);
      }
    }
    return this.#join(meeting, null);
  }

  /** Leaves a meeting for good (the seat ends). @param {string} meeting */
  async leaveMeeting(meeting) {
    this.#seats.forget(meeting);
    await this.#request({op: 'meeting.leave', meeting}, {retry: true});
  }

  /**
   * Relays `data` (SDP, ICE candidate …) to a participant. Not written again after a
   * drop (it may have been relayed); signals made while reconnecting go out once the
   * seat is back.
   */
  signal(meeting, to, data) {
    return this.#request({op: 'signal', meeting, to, data}, {retry: false});
  }

  /** Mutes or unmutes a participant (the host, an admin, or oneself). */
  mute(meeting, participant, muted = true) {
    return this.#request({op: 'meeting.mute', meeting, participant, muted}, {retry: true});
  }

  /** Removes a participant for the rest of the meeting (host or admin). */
  remove(meeting, participant) {
    return this.#request({op: 'meeting.remove', meeting, participant});
  }

  /** Hands the host role to a participant (host or admin). */
  transferHost(meeting, participant) {
    return this.#request({op: 'meeting.transfer_host', meeting, participant});
  }

  /** Ends the meeting for everyone (host or admin). */
  endMeeting(meeting) {
    return this.#request({op: 'meeting.end', meeting});
  }

  /** Closes the connection (1000) and stops reconnecting; pending requests fail. */
  close() {
    if (this.#closing) return;
    this.#closing = true;
    clearTimeout(this.#retryTimer);
    this.#flushCursors();
    const ws = this.#ws;
    this.#ws = null;
    this.#welcomed = false;
    ws?.close(1000);
    this.#fail(1000, 'the client is closed');
  }

  // ----- the connection -----

  #open() {
    this.#retryTimer = null;
    this.#setState({state: 'connecting'});
    const ws = new WebSocket(this.#url);
    const attempt = {welcomed: false, refusal: null};
    // Closing a socket still connecting fails it: the close handler retries.
    const deadline = setTimeout(() => ws.close(), this.#connectTimeoutMs);
    this.#ws = ws;
    ws.onopen = async () => {
      let token;
      try {
        token = typeof this.#token === 'function' ? await this.#token() : this.#token;
      } catch {
        ws.close();
        return;
      }
      if (ws.readyState !== WebSocket.OPEN) return;
      const hello = {op: 'hello', token, ...(this.#resume && this.session && {resume: this.session})};
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (event) => {
      const frame = decode(event.data);
      if (!frame || ws !== this.#ws) return;
      if (attempt.welcomed) this.#dispatch(frame);
      else if (frame.op === 'welcome') {
        attempt.welcomed = true;
        clearTimeout(deadline);
        this.#onWelcome(ws, frame);
      } else if (frame.op === 'error') attempt.refusal = frame; // a close follows
    };
    ws.onclose = (event) => {
      clearTimeout(deadline);
      if (ws === this.#ws) this.#onClose(attempt, event.code, event.reason);
    };
  }

  #onWelcome(ws, welcome) {
    this.user = welcome.user;
    this.tenant = welcome.tenant;
    this.session = welcome.session;
    this.#seats.setOwner(this.tenant, this.user);
    this.#attempt = 0;
    this.#resume = true;
    this.#welcomed = true;
    const generation = ++this.#generation;
    this.#setState({state: 'open'});
    // Seats first, so that queued signals and host controls find them back.
    for (const [meeting, seat] of this.#seats.rejoins()) {
      const frame = {op: 'meeting.join', meeting, seat};
      const request = this.#requests.add(frame, {detached: true, onReply: this.#rejoinHook(meeting)});
      ws.send(this.#requests.encode(request, generation));
    }
    this.#pump();
    for (const [room, since] of this.#cursors.resubscriptions()) this.#resubscribe(room, since);
    this.#cursorBatch.resend();
    this.#scheduleCursors();
    const reconnect = this.#everWelcomed;
    this.#everWelcomed = true;
    this.#emit('welcome', {...welcome, reconnect});
    this.#firstWelcome.resolve(welcome);
  }

  #onClose(attempt, code, reason) {
    this.#ws = null;
    this.#welcomed = false;
    if (attempt.welcomed) this.#requests.connectionLost(this.#generation, new ConnectionClosedError(code, reason));
    if (this.#closing) return;
    const refusal = attempt.refusal;
    let retryAfter = null;
    if (refusal && RETRY_CODES.has(refusal.code)) retryAfter = refusal.retry_after_ms ?? DEFAULT_RETRY_AFTER_MS;
    else if (code === 1013) retryAfter = retryAfterFromReason(reason);
    if (!RECONNECT_CODES.has(code) && retryAfter == null) {
      this.#fail(code, reason || refusal?.message || '');
      return;
    }
    if (attempt.welcomed) this.#resume = code !== CLOSE_REPLACED;
    const delay = retryAfter ?? backoffDelay(this.#attempt++, this.#maxBackoffMs);
    this.#setState({
      state: 'waiting',
      code: code || CLOSE_ABNORMAL,
      reason,
      retryAt: Date.now() + delay,
      overloaded: retryAfter != null,
      queuePos: refusal?.queue_pos ?? null,
    });
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  #fail(code, reason) {
    const error = new ConnectionClosedError(code, reason);
    this.#requests.close(error);
    this.#firstWelcome?.reject(error);
    this.#setState({state: 'closed', code, reason});
  }

  #setState(detail) {
    this.state = detail.state;
    this.#emit('state', detail);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }

  #dispatch(frame) {
    if (frame.op === 'reply' || (frame.op === 'error' && frame.id != null)) {
      this.#requests.resolve(frame); // unknown ids: answers nobody waits for
      this.#pump(); // a slot is free
      return;
    }
    if (frame.op === 'msg') {
      if (!this.#cursors.accept(frame)) return;
      if (this.#autoAck) this.ack(frame.room, frame.seq);
    } else if (frame.op === 'meeting.event') this.#seats.event(frame);
    this.#emit(frame.op, frame);
  }

  // ----- requests -----

  async #request(frame, {retry = false, retryRefused = retry, onReply = null} = {}) {
    for (;;) {
      const request = this.#requests.add(frame, {retry, onReply});
      this.#pump();
      try {
        return await request.promise;
      } catch (error) {
        if (!retryRefused || !(error instanceof ServerError) || !RETRY_CODES.has(error.code)) throw error;
        await sleep(error.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS);
      }
    }
  }

  /** Writes the requests waiting for the connection, oldest first, within the bound. */
  #pump() {
    if (!this.#welcomed) return;
    for (let request; (request = this.#requests.nextUnsent()); ) {
      this.#ws.send(this.#requests.encode(request, this.#generation));
    }
  }

  async #unsubscribe(op, room) {
    this.#cursors.unsubscribed(room); // now: a reconnect meanwhile must not subscribe again
    const onReply = (reply) => reply.op === 'reply' && this.#cursors.unsubscribed(room);
    await this.#request({op, room}, {retry: true, onReply});
  }

  async #resubscribe(room, since) {
    try {
      await this.subscribe(room, {since});
    } catch (error) {
      if (!(error instanceof ServerError)) return; // dropped again: the next connection subscribes
      this.#cursors.unsubscribed(room); // e.g. forbidden after the token changed
      this.#emit('error', {...error.frame, room});
    }
  }

  #join(meeting, seat) {
    const frame = {op: 'meeting.join', meeting, ...(seat && {seat})};
    const onReply = (reply) => reply.op === 'reply' && this.#seats.joined(reply);
    // Without a seat token, a join written twice would take two seats.
    return this.#request(frame, {retry: seat != null, retryRefused: true, onReply});
  }

  /** A rejoin's answer: keep the fresh token and tell the application; after
   * `overloaded` (a restarted server's every seat at once) try again later. */
  #rejoinHook(meeting) {
    return (reply) => {
      if (reply.op === 'reply') {
        this.#seats.joined(reply);
        const {op: _op, id: _id, ...fields} = reply;
        this.#emit('rejoined', fields);
      } else if (RETRY_CODES.has(reply.code)) {
        setTimeout(() => this.#rejoinLater(meeting), reply.retry_after_ms ?? DEFAULT_RETRY_AFTER_MS);
      } else {
        this.#seats.forget(meeting);
        this.#emit('seatlost', {meeting, code: reply.code, message: reply.message});
      }
    };
  }

  async #rejoinLater(meeting) {
    const seat = this.#seats.token(meeting);
    if (!seat || this.#closing) return; // left meanwhile
    try {
      const reply = await this.#join(meeting, seat);
      this.#emit('rejoined', reply);
    } catch (error) {
      if (error instanceof ServerError) {
        this.#seats.forget(meeting);
        this.#emit('seatlost', {meeting, code: error.code, message: error.message});
      }
    }
  }

  // ----- acks and reads -----

  #queueCursor(op, room, seq) {
    if (this.#cursorBatch.add(op, room, seq)) this.#scheduleCursors();
  }

  #scheduleCursors() {
    this.#cursorTimer ??= setTimeout(() => this.#flushCursors(), CURSOR_FLUSH_MS);
  }

  #flushCursors() {
    clearTimeout(this.#cursorTimer);
    this.#cursorTimer = null;
    if (!this.#welcomed) return; // the next welcome sends them
    for (const frame of this.#cursorBatch.take()) this.#ws.send(JSON.stringify(frame));
  }
}
