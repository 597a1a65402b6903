// The chat: the room list with unread badges, the open room, the composer, and reads
// (a room counts as read while it is open on a visible page).

import {RoomView} from './app-room.js';
import {byId, h} from './app-dom.js';

export class Chat {
  /** @type {Map<string, RoomView>} */
  rooms = new Map();
  /** The open room, or null. */
  active = null;

  #client;
  #onError;

  /** @param {(message: string) => void} onError shows a failure to the user */
  constructor(client, onError) {
    this.#client = client;
    this.#onError = onError;
    client.on('welcome', (welcome) => this.#welcome(welcome));
    client.on('msg', (msg) => {
      const room = this.rooms.get(msg.room);
      if (room?.add(msg)) this.#changed(room);
    });
    client.on('receipts', (frame) => this.rooms.get(frame.room)?.refreshReceipts());
    client.on('presence', (frame) => this.rooms.get(frame.room)?.presenceChanged(frame));
    byId('composer').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = event.target.elements.text;
      const text = input.value.trim();
      if (!text || !this.active) return;
      input.value = '';
      this.active.send(text);
    });
    document.addEventListener('visibilitychange', () => this.active && this.#markRead(this.active));
  }

  /** Opens a room (joining it first if new) and shows it. */
  open(name) {
    const room = this.rooms.get(name) ?? this.#add(name);
    for (const other of this.rooms.values()) other.list.hidden = other !== room;
    this.active = room;
    for (const li of byId('rooms').children) li.classList.toggle('active', li.dataset.room === name);
    byId('room-title').textContent = `# ${name}`;
    this.#paintOnline(room);
    this.#markRead(room);
    byId('composer').elements.text.focus();
  }

  async #welcome(welcome) {
    if (welcome.reconnect) {
      // Messages come back through the client's resubscription; the rest is asked again.
      for (const room of this.rooms.values()) room.refresh().catch(() => {});
      return;
    }
    for (const [name, counts] of Object.entries(welcome.unread ?? {})) {
      const room = this.rooms.get(name) ?? this.#add(name);
      room.lastSeq = Math.max(room.lastSeq, counts.last_seq);
      room.readSeq = Math.max(room.readSeq, counts.read_seq);
      this.#paintBadge(room);
    }
  }

  #add(name) {
    const room = new RoomView(this.#client, name);
    room.onPresence = () => room === this.active && this.#paintOnline(room);
    this.rooms.set(name, room);
    byId('messages').append(room.list);
    const item = h(
      'li',
      {class: 'room', dataset: {room: name}},
      h('a', {href: `#room=${encodeURIComponent(name)}`}, h('span', {class: 'name'}, `# ${name}`), h('span', {class: 'badge', hidden: true})),
    );
    const items = [...byId('rooms').children];
    byId('rooms').insertBefore(item, items.find((li) => li.dataset.room > name) ?? null);
    room.load().then(
      () => this.#changed(room),
      (error) => this.#onError(`Cannot open # ${name}: ${error.message}`),
    );
    return room;
  }

  #changed(room) {
    if (room === this.active) this.#markRead(room);
    this.#paintBadge(room);
  }

  #markRead(room) {
    if (document.visibilityState !== 'visible' || room.lastSeq <= room.readSeq) return;
    room.readSeq = room.lastSeq;
    this.#client.read(room.name, room.lastSeq);
    this.#paintBadge(room);
  }

  #paintBadge(room) {
    const badge = byId('rooms').querySelector(`li[data-room="${CSS.escape(room.name)}"] .badge`);
    const unread = room === this.active && document.visibilityState === 'visible' ? 0 : room.unread;
    badge.hidden = unread === 0;
    badge.textContent = unread > 99 ? '99+' : String(unread);
  }

  #paintOnline(room) {
    const users = [...room.online].sort();
    byId('online').replaceChildren(...users.map((user) => h('li', {dataset: {user}}, h('span', {class: 'dot on'}), user)));
  }
}
