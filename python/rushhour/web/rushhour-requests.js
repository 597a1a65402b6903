// Requests awaiting their reply: ids, the in-flight bound, and what a dropped
// connection does to each (write it again on the next connection, or fail it).
// No socket here: the client writes the text that `encode` returns.

/** Requests written and unanswered at once: the server's per-connection limit (past it
 * it answers `rate_limited`), so requests wait here instead of being refused. */
export const MAX_IN_FLIGHT = 64;

/** The server answered a request with an error frame. */
export class ServerError extends Error {
  /** @param {{code: string, message?: string, retry_after_ms?: number}} frame */
  constructor(frame) {
    super(frame.message ?? frame.code);
    this.name = 'ServerError';
    /** The protocol error code (`forbidden`, `overloaded` …). */
    this.code = frame.code;
    /** The server's "retry after" in ms, for `rate_limited` and `overloaded`. */
    this.retryAfterMs = Number.isInteger(frame.retry_after_ms) ? frame.retry_after_ms : null;
    /** The whole error frame (e.g. `queue_pos`). */
    this.frame = frame;
  }
}

/** The connection closed before a reply, or the client is closed. */
export class ConnectionClosedError extends Error {
  constructor(code, reason = '') {
    super(`connection closed (${code}${reason ? `: ${reason}` : ''})`);
    this.name = 'ConnectionClosedError';
    this.code = code;
    this.reason = reason;
  }
}

/** One request frame and its fate. */
class Request {
  constructor(frame, {retry, onReply, detached}) {
    const {op, id: _ignored, ...rest} = frame;
    // Encoded once, in the caller's turn, so a body that is not JSON fails the call.
    const text = JSON.stringify(rest);
    this.head = `{"op":${JSON.stringify(op)},"id":`;
    this.tail = text === '{}' ? '}' : `,${text.slice(1)}`;
    /** Write it again on a new connection if the old one drops before the reply. */
    this.retry = retry;
    /** Called with the reply or error frame before any later frame is handled. */
    this.onReply = onReply;
    /** Not counted, never written again: a rejoin the client writes itself. */
    this.detached = detached;
    this.id = null;
    this.generation = null;
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // Nobody awaits a detached request: its hook sees the outcome.
    if (detached) this.promise.catch(() => {});
  }
}

/** The table of requests between their call and their reply, across connections. */
export class Requests {
  #nextId = 1; // never reused, even across connections
  #order = new Set(); // call order, kept when written again
  #byId = new Map();
  #inFlight = 0;
  #error = null;

  /** Tracks a request; its promise settles with the reply (without `op` and `id`). */
  add(frame, {retry = false, onReply = null, detached = false} = {}) {
    const request = new Request(frame, {retry, onReply, detached});
    if (this.#error) request.reject(this.#error);
    else if (!detached) this.#order.add(request);
    return request;
  }

  /** The oldest request to write now, or null (none waiting, or the bound is reached). */
  nextUnsent() {
    if (this.#inFlight >= MAX_IN_FLIGHT) return null;
    for (const request of this.#order) if (request.generation == null) return request;
    return null;
  }

  /** Gives `request` a fresh id on connection `generation`; returns the text to write. */
  encode(request, generation) {
    request.id = this.#nextId++;
    request.generation = generation;
    this.#byId.set(request.id, request);
    if (!request.detached) this.#inFlight++;
    return request.head + request.id + request.tail;
  }

  /** Settles the request a `reply` or `error` frame answers; false if none has its id. */
  resolve(frame) {
    const request = this.#byId.get(frame.id);
    if (!request) return false;
    request.onReply?.(frame);
    this.#finish(request);
    if (frame.op === 'error') request.reject(new ServerError(frame));
    else {
      const {op: _op, id: _id, ...reply} = frame;
      request.resolve(reply);
    }
    return true;
  }

  /** Connection `generation` is gone: its retriable requests wait for the next one, in
   * their place; the others fail with `error`. */
  connectionLost(generation, error) {
    for (const request of [...this.#byId.values()]) {
      if (request.generation !== generation) continue;
      if (request.retry && !request.detached) {
        this.#byId.delete(request.id);
        this.#inFlight--;
        request.id = request.generation = null;
      } else {
        this.#finish(request);
        request.reject(error);
      }
    }
  }

  /** Fails every request with `error`, now and from now on. */
  close(error) {
    this.#error = error;
    for (const request of [...this.#order, ...this.#byId.values()]) {
      this.#finish(request);
      request.reject(error);
    }
  }

  #finish(request) {
    this.#order.delete(request);
    if (request.id != null && this.#byId.delete(request.id) && !request.detached) this.#inFlight--;
  }
}
