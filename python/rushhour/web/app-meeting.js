// The meeting: our seat, the roster as tiles, one peer connection per other participant
// (a mesh), and the controls (microphone, leave, host controls).
//
// Who offers: a participant that joins (or rejoins from a fresh page) starts a peer
// connection to everyone connected; the others answer when its first offer arrives.
// After a mere reconnect of the WebSocket the peer connections stay: media does not go
// through the server, so it never stopped.
//
// A broadcast (webinar): viewers are in no roster and publish nothing. A viewer offers a
// receive-only peer connection to each presenter (presenters never learn of viewers but
// by their offers); a presenter answers it without a tile and forgets it when it fails,
// or when the viewer says `bye`.

import {ConnectionClosedError} from './rushhour.js';
import {Peer} from './app-peer.js';
import {Tile} from './app-tile.js';
import {byId} from './app-dom.js';

/** Small video: a mesh sends one copy per participant. */
const MEDIA = {audio: true, video: {width: {ideal: 640}, height: {ideal: 360}}};

export class Meeting {
  /** The meeting id, or null when not in one. */
  id = null;
  /** Our participant id and role; the meeting's mode (`interactive`, `broadcast`). */
  me = null;
  role = null;
  mode = null;

  #client;
  #onEnd;
  #notify;
  #epoch = 0;
  #viewers = 0;
  #stream = null;
  /** Events and signals that wait for our roster and media (null: none waits). */
  #held = null;
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
    client.on('meeting.event', (frame) => frame.meeting === this.id && this.#whenReady(() => this.#event(frame)));
    client.on('signal', (frame) => frame.meeting === this.id && this.#whenReady(() => this.#signal(frame.from, frame.data)));
    client.on('rejoined', (reply) => reply.meeting === this.id && this.#whenReady(() => this.#joined(reply)));
    client.on('seatlost', (frame) => frame.meeting === this.id && this.#end(`Your seat was lost: ${frame.message}`));
    byId('mic').addEventListener('click', () => this.#setMic(!this.#micOn, true));
    byId('leave').addEventListener('click', () => this.leave());
    byId('end-meeting').addEventListener('click', () => this.#host(() => this.#client.endMeeting(this.id)));
    window.addEventListener('pagehide', () => this.#bye());
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
    this.#held = [];
    byId('meeting-title').textContent = `Meeting ${id}`;
    byId('meeting-link').value = `${location.origin}/#meeting=${encodeURIComponent(id)}`;
    let reply;
    try {
      reply = await this.#client.joinMeeting(id);
    } catch (error) {
      if (this.id === id) this.#end(`Cannot join ${id}: ${error.message}`);
      return;
    }
    if (this.id !== id) return;
    // Only the reply tells a viewer (who publishes nothing, so is never asked for a
    // camera) from a presenter, who offers its media from the start.
    if (reply.role !== 'viewer' && !this.#stream?.active) {
      const stream = await this.#media();
      if (this.id !== id) return stop(stream);
      this.#stream = stream;
    }
    this.#joined(reply);
    this.#release();
  }

  /** Leaves for good: the seat ends. */
  async leave() {
    const id = this.id;
    this.#bye();
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

  /** Runs `handle` now, or after the roster and media we wait for. */
  #whenReady(handle) {
    if (this.#held) this.#held.push(handle);
    else handle();
  }

  #release() {
    const held = this.#held ?? [];
    this.#held = null;
    for (const [i, handle] of held.entries()) {
      if (!this.id) return; // ended
      if (this.#held) return void this.#held.push(...held.slice(i)); // waiting again: the rest after that
      handle();
    }
  }

  /** Our join or rejoin reply: the roster, and peer connections to whoever has none. */
  #joined(reply) {
    const was = this.role;
    this.me = reply.participant;
    this.role = reply.role;
    this.mode = reply.mode ?? 'interactive';
    this.#epoch = reply.epoch;
    this.#viewers = reply.viewers ?? 0;
    byId('meeting-title').textContent = `${this.mode === 'broadcast' ? 'Webinar' : 'Meeting'} ${reply.meeting}`;
    byId('meeting').dataset.me = this.me;
    const present = new Set(reply.roster.map((p) => p.participant));
    for (const id of this.#roster.keys()) if (!present.has(id)) this.#drop(id);
    for (const p of reply.roster) this.#upsert(p);
    for (const p of reply.roster) {
      if (p.participant !== this.me && p.state === 'connected' && !this.#peers.has(p.participant)) {
        this.#connect(p.participant).start();
      }
    }
    this.#paintRole();
    this.#paintCount();
    if (was === 'viewer' && this.role !== 'viewer') this.#publish(); // made host while away
  }

  /** Our seat became a presenter's (a viewer made host): asks for media and sends it on
   * every peer connection; the viewers' offers to us wait for it. */
  async #publish() {
    const id = this.id;
    this.#held ??= [];
    const stream = this.#stream?.active ? this.#stream : await this.#media();
    if (this.id !== id) return stop(stream);
    this.#stream = stream;
    if (stream) {
      this.#tiles.get(this.me)?.show(stream);
      for (const peer of this.#peers.values()) peer.publish(stream);
    }
    this.#setMic(this.#micOn, false);
    this.#paintRole();
    this.#release();
  }

  /** A viewer offers to a connected presenter it has no peer connection to: a presenter
   * never knows whom to offer to. */
  #receiveFrom(p) {
    if (this.role !== 'viewer' || !p || p.role === 'viewer' || p.state !== 'connected') return;
    if (p.participant !== this.me && !this.#peers.has(p.participant)) this.#connect(p.participant).start();
  }

  /** Broadcast: the viewer–presenter peer connections are told that this page goes, so the
   * other side forgets them at once (presenters hear nothing else of viewers). */
  #bye() {
    if (this.mode !== 'broadcast') return;
    for (const [participant, peer] of this.#peers) {
      if (this.role === 'viewer' || !this.#roster.has(participant)) peer.bye();
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
      case 'count':
        this.#viewers = frame.viewers;
        this.#paintCount();
        break;
      case 'joined':
      case 'rejoined':
      case 'reconnecting':
      case 'muted': // our own microphone follows (in #upsert)
        if (p.role === 'viewer') break; // a viewer (maybe us) has no tile
        this.#upsert(p);
        this.#receiveFrom(p);
        break;
      case 'host_changed': {
        const was = this.role;
        if (frame.previous) this.#upsert(frame.previous);
        this.#upsert(p);
        if (mine) this.role = p.role;
        else if (frame.previous?.participant === this.me) this.role = frame.previous.role;
        this.#paintRole();
        if (was === 'viewer' && this.role !== 'viewer') this.#publish();
        else this.#receiveFrom(p);
        break;
      }
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
    if (data.bye) {
      if (peer?.remoteId === data.pc) this.#forget(from); // a viewer offers again if it comes back
      return;
    }
    if (peer?.remoteId && peer.remoteId !== data.pc) {
      // The other side started a new peer connection (its page reloaded): so do we.
      this.#forget(from);
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
      stream: this.#stream, // null for a viewer: receive-only
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
        if ((state === 'failed' || state === 'closed') && this.#peers.get(participant) === peer) this.#lost(participant);
      },
    });
    this.#peers.set(participant, peer);
    this.#paintPeers();
    return peer;
  }

  /** A peer connection failed. In the mesh, the Peer restarts ICE. A viewer's is made
   * afresh instead: the presenter forgets it (the viewer is in no roster: no event would
   * ever end it), and the viewer offers a new one if the presenter is still there. */
  #lost(participant) {
    if (this.mode !== 'broadcast') return;
    const p = this.#roster.get(participant);
    if (!p) this.#forget(participant);
    else if (this.role === 'viewer') {
      this.#forget(participant);
      this.#receiveFrom(p);
    }
  }

  #forget(participant) {
    this.#peers.get(participant)?.close();
    this.#peers.delete(participant);
    this.#paintPeers();
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
      const peer = this.#peers.get(p.participant); // a viewer just made host
      if (peer) tile.media = peer.state;
    }
    tile.update(p, this.role === 'host');
    if (p.participant === this.me) {
      if (p.muted === this.#micOn) this.#setMic(!p.muted, false); // e.g. muted while we were away
      this.#paintRole();
    }
  }

  /** A participant left: its tile, roster entry and peer connection (a viewer has only the latter). */
  #drop(participant) {
    this.#forget(participant);
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

  #paintRole() {
    const host = this.role === 'host';
    byId('end-meeting').hidden = !host;
    byId('mic').hidden = this.role === 'viewer';
    byId('meeting').dataset.role = this.role ?? '';
    for (const [id, tile] of this.#tiles) tile.update(this.#roster.get(id), host);
  }

  #paintCount() {
    const count = byId('viewers');
    count.hidden = this.mode !== 'broadcast';
    count.textContent = `${this.#viewers} watching`;
  }

  /** Whom this page has a peer connection to (the tests read it). */
  #paintPeers() {
    byId('meeting').dataset.peers = [...this.#peers.keys()].join(' ');
  }

  #end(message) {
    for (const peer of this.#peers.values()) peer.close();
    this.#peers.clear();
    this.#tiles.clear();
    this.#roster.clear();
    byId('tiles').replaceChildren();
    stop(this.#stream);
    this.#stream = null;
    this.#held = null;
    this.#setMic(true, false);
    this.id = this.me = this.role = this.mode = null;
    this.#epoch = this.#viewers = 0;
    this.#paintRole();
    this.#paintCount();
    this.#paintPeers();
    delete byId('meeting').dataset.me;
    this.#onEnd(message);
  }
}

/** Releases the camera and microphone of `stream` (null: nothing). */
function stop(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}
