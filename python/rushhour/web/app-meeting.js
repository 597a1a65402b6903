// The meeting: our seat, the roster as tiles, one peer connection per other participant
// (a mesh), and the controls (microphone, leave, host controls).
//
// Who offers: a participant that joins (or rejoins from a fresh page) starts a peer
// connection to everyone connected; the others answer when its first offer arrives.
// After a mere reconnect of the WebSocket the peer connections stay: media does not go
// through the server, so it never stopped.

import {ConnectionClosedError} from './rushhour.js';
import {Peer} from './app-peer.js';
import {Tile} from './app-tile.js';
import {byId} from './app-dom.js';

/** Small video: a mesh sends one copy per participant. */
const MEDIA = {audio: true, video: {width: {ideal: 640}, height: {ideal: 360}}};

export class Meeting {
  /** The meeting id, or null when not in one. */
  id = null;
  /** Our participant id and role. */
  me = null;
  role = null;

  #client;
  #onEnd;
  #notify;
  #epoch = 0;
  #stream = null;
  #micOn = true;
  #roster = new Map(); // participant id → roster object
  #tiles = new Map();
  #peers = new Map();

  /**
   * @param {import('./rushhour.js').Client} client
   * @param {object} hooks
   * @param {(message: string | null) => void} hooks.onEnd the meeting view closed (and why)
   * @param {(message: string) => void} hooks.notify tells the user something
   */
  constructor(client, {onEnd, notify}) {
    this.#client = client;
    this.#onEnd = onEnd;
    this.#notify = notify;
    client.on('meeting.event', (frame) => frame.meeting === this.id && this.#event(frame));
    client.on('signal', (frame) => frame.meeting === this.id && this.#signal(frame.from, frame.data));
    client.on('rejoined', (reply) => reply.meeting === this.id && this.#joined(reply));
    client.on('seatlost', (frame) => frame.meeting === this.id && this.#end(`Your seat was lost: ${frame.message}`));
    byId('mic').addEventListener('click', () => this.#setMic(!this.#micOn, true));
    byId('leave').addEventListener('click', () => this.leave());
    byId('end-meeting').addEventListener('click', () => this.#host(() => this.#client.endMeeting(this.id)));
    byId('copy-link').addEventListener('click', () => {
      const link = byId('meeting-link');
      const copied = navigator.clipboard?.writeText(link.value) ?? Promise.reject(new Error('no clipboard'));
      copied.then(
        () => notify('Link copied.'),
        () => link.select(), // no clipboard here (e.g. plain http): the user copies it
      );
    });
  }

  /** Joins a meeting (leaving the current one), with the seat this tab held if any. */
  async join(id) {
    if (this.id === id) return;
    if (this.id) await this.leave();
    this.id = id;
    byId('meeting-title').textContent = `Meeting ${id}`;
    byId('meeting-link').value = `${location.origin}/#meeting=${encodeURIComponent(id)}`;
    if (!this.#stream?.active) this.#stream = await this.#media();
    try {
      this.#joined(await this.#client.joinMeeting(id));
    } catch (error) {
      this.#end(`Cannot join ${id}: ${error.message}`);
    }
  }

  /** Leaves for good: the seat ends. */
  async leave() {
    const id = this.id;
    this.#end(null);
    await this.#client.leaveMeeting(id).catch(() => {});
  }

  async #media() {
    try {
      return await navigator.mediaDevices.getUserMedia(MEDIA);
    } catch (error) {
      console.warn('rushhour: no camera or microphone, joining to watch only', error);
      return null;
    }
  }

  /** Our join or rejoin reply: the roster, and peer connections to whoever has none. */
  #joined(reply) {
    this.me = reply.participant;
    this.role = reply.role;
    this.#epoch = reply.epoch;
    const present = new Set(reply.roster.map((p) => p.participant));
    for (const id of this.#roster.keys()) if (!present.has(id)) this.#drop(id);
    for (const p of reply.roster) this.#upsert(p);
    for (const p of reply.roster) {
      if (p.participant !== this.me && p.state === 'connected' && !this.#peers.has(p.participant)) {
        this.#connect(p.participant).start();
      }
    }
  }

  #event(frame) {
    // Older than our roster: already in it. (Equal may be news: events about broadcast
    // viewers do not move the epoch; applying a roster object twice changes nothing.)
    if (frame.epoch < this.#epoch) return;
    this.#epoch = Math.max(this.#epoch, frame.epoch ?? 0);
    const p = frame.participant;
    const mine = p?.participant === this.me;
    switch (frame.event) {
      case 'joined':
      case 'rejoined':
      case 'reconnecting':
      case 'muted': // our own microphone follows (in #upsert)
        this.#upsert(p);
        break;
      case 'host_changed':
        if (frame.previous) this.#upsert(frame.previous);
        this.#upsert(p);
        if (mine) this.role = p.role;
        else if (frame.previous?.participant === this.me) this.role = frame.previous.role;
        this.#paintHost();
        break;
      case 'left':
      case 'removed':
        if (mine) this.#end(frame.event === 'removed' ? 'The host removed you from the meeting.' : null);
        else this.#drop(p.participant);
        break;
      case 'replaced':
        if (mine) this.#end('This seat is now used by another tab.');
        break;
      case 'ended':
        this.#end('The meeting has ended.');
        break;
    }
  }

  #signal(from, data) {
    if (typeof data?.pc !== 'string') return;
    let peer = this.#peers.get(from);
    if (peer && data.to && data.to !== peer.id) return; // for a peer connection we closed
    if (peer?.remoteId && peer.remoteId !== data.pc) {
      // The other side started a new peer connection (its page reloaded): so do we.
      peer.close();
      this.#peers.delete(from);
      peer = null;
    }
    if (!peer) {
      if (data.description?.type !== 'offer') return; // the tail of a closed negotiation
      peer = this.#connect(from);
    }
    peer.handle(data);
  }

  #connect(participant) {
    const peer = new Peer({
      polite: this.me > participant,
      stream: this.#stream,
      send: (data) =>
        this.#client.signal(this.id, participant, data).catch((error) => {
          // A drop loses it (the next offer after the rejoin renegotiates); a participant
          // that left meanwhile makes it `not_found`.
          if (!(error instanceof ConnectionClosedError)) console.warn('rushhour: signal refused', error.message);
        }),
      onStream: (stream) => this.#tiles.get(participant)?.show(stream),
      onState: (state) => {
        const tile = this.#tiles.get(participant);
        if (tile) tile.media = state;
      },
    });
    this.#peers.set(participant, peer);
    return peer;
  }

  #upsert(p) {
    this.#roster.set(p.participant, p);
    let tile = this.#tiles.get(p.participant);
    if (!tile) {
      const local = p.participant === this.me;
      tile = new Tile(p.participant, {local, onAction: (action, id) => this.#hostAction(action, id)});
      this.#tiles.set(p.participant, tile);
      byId('tiles').append(tile.el);
      if (local && this.#stream) tile.show(this.#stream);
    }
    tile.update(p, this.role === 'host');
    if (p.participant === this.me) {
      if (p.muted === this.#micOn) this.#setMic(!p.muted, false); // e.g. muted while we were away
      this.#paintHost();
    }
  }

  #drop(participant) {
    this.#peers.get(participant)?.close();
    this.#peers.delete(participant);
    this.#tiles.get(participant)?.el.remove();
    this.#tiles.delete(participant);
    this.#roster.delete(participant);
  }

  #hostAction(action, participant) {
    const client = this.#client;
    const p = this.#roster.get(participant);
    const run = {
      mute: () => client.mute(this.id, participant, !p?.muted),
      remove: () => client.remove(this.id, participant),
      host: () => client.transferHost(this.id, participant),
    }[action];
    this.#host(run);
  }

  #host(run) {
    run().catch((error) => this.#notify(`Refused: ${error.message}`));
  }

  #setMic(on, tell) {
    this.#micOn = on;
    for (const track of this.#stream?.getAudioTracks() ?? []) track.enabled = on;
    byId('mic').textContent = on ? 'Mute' : 'Unmute';
    byId('mic').setAttribute('aria-pressed', String(!on));
    if (tell && this.id && this.me) this.#client.mute(this.id, this.me, !on).catch(() => {});
  }

  #paintHost() {
    const host = this.role === 'host';
    byId('end-meeting').hidden = !host;
    for (const [id, tile] of this.#tiles) tile.update(this.#roster.get(id), host);
  }

  #end(message) {
    for (const peer of this.#peers.values()) peer.close();
    this.#peers.clear();
    this.#tiles.clear();
    this.#roster.clear();
    byId('tiles').replaceChildren();
    for (const track of this.#stream?.getTracks() ?? []) track.stop();
    this.#stream = null;
    this.#setMic(true, false);
    this.id = this.me = this.role = null;
    this.#epoch = 0;
    this.#onEnd(message);
  }
}
