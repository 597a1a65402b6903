// One room of the chat: its messages in seq order (each once), the sent / delivered /
// read marks of our own messages, the read-by list, and who is online.

import {newCid} from './rushhour.js';
import {bodyText, clock, debounce, h} from './app-dom.js';

/** Own messages whose receipt counts are kept fresh: the newest, where counts move. */
const RECEIPT_WINDOW = 20;
/** Receipt pushes come at most every 250 ms per room; one refresh answers a burst. */
const RECEIPT_REFRESH_MS = 150;
/** Within this many pixels of the bottom, a new message scrolls the list down. */
const STICKY_BOTTOM_PX = 80;

export class RoomView {
  /** The last seq known in the room, and ours read up to: the unread badge. */
  lastSeq = 0;
  readSeq = 0;
  /** Members online now. */
  online = new Set();
  /** Called when `online` changed. */
  onPresence = () => {};

  #client;
  #bySeq = new Map(); // seq → <li>
  #pending = new Map(); // cid → <li> of an own message without its seq yet

  constructor(client, name) {
    this.#client = client;
    this.name = name;
    this.list = h('ol', {class: 'messages', dataset: {room: name}, 'aria-label': `Messages of ${name}`, hidden: true});
    this.refreshReceipts = debounce(() => this.#refreshReceipts(), RECEIPT_REFRESH_MS);
  }

  get unread() {
    return Math.max(0, this.lastSeq - this.readSeq);
  }

  /** Loads the newest messages, then subscribes from the last of them: no gap between
   * the two, and the client subscribes again from its cursor after a reconnect. */
  async load() {
    const messages = await this.#client.history(this.name);
    for (const msg of messages) this.add(msg);
    const reply = await this.#client.subscribe(this.name, {since: messages.at(-1)?.seq ?? 0});
    this.lastSeq = Math.max(this.lastSeq, reply.last_seq);
    this.readSeq = Math.max(this.readSeq, reply.read_seq);
    await this.refresh();
  }

  /** Presence and receipt counts asked again (after a load or a reconnect). */
  async refresh() {
    const {online} = await this.#client.presence(this.name);
    this.online = new Set(online);
    this.#paintPresence();
    this.refreshReceipts();
  }

  /** Shows a message (from history or a push) unless it is shown already. */
  add(msg) {
    if (this.#bySeq.has(msg.seq)) return false;
    const mine = msg.from === this.#client.user;
    const li = (mine && this.#pending.get(msg.cid)) || this.#render(msg, mine);
    this.#place(li, msg.seq, msg.ts);
    this.lastSeq = Math.max(this.lastSeq, msg.seq);
    if (mine) this.readSeq = Math.max(this.readSeq, msg.seq); // a sender has read its own
    return true;
  }

  /** Sends a message: shown at once as pending, placed at its seq once stored. */
  async send(text) {
    const cid = newCid();
    const li = this.#render({from: this.#client.user, cid, body: {text}}, true);
    this.#pending.set(cid, li);
    this.#append(li);
    try {
      const reply = await this.#client.send(this.name, {text}, {cid});
      if (this.#pending.has(cid)) this.#place(li, reply.seq, reply.ts);
    } catch (error) {
      this.#setStatus(li, 'failed');
      li.title = error.message;
    }
  }

  /** A presence push: who came online and who went offline. */
  presenceChanged({online = [], offline = []}) {
    for (const user of online) this.online.add(user);
    for (const user of offline) this.online.delete(user);
    this.#paintPresence();
  }

  #render(msg, mine) {
    const li = h(
      'li',
      {class: mine ? 'msg mine' : 'msg', dataset: {from: msg.from, cid: msg.cid}},
      h('div', {class: 'meta'}, h('span', {class: 'dot', 'aria-hidden': 'true'}), h('b', {class: 'from'}, msg.from), h('time')),
      h('div', {class: 'text'}, bodyText(msg.body)),
      mine && h('div', {class: 'status'}),
      h('div', {class: 'read-by', hidden: true}),
    );
    li.addEventListener('click', () => this.#toggleReadBy(li));
    if (mine) this.#setStatus(li, 'pending');
    this.#paintDot(li);
    return li;
  }

  /** Gives `li` its seq and moves it to its place: seq order, pending ones last. */
  #place(li, seq, ts) {
    this.#pending.delete(li.dataset.cid);
    li.dataset.seq = seq;
    li.querySelector('time').textContent = clock(ts ?? Date.now());
    this.#bySeq.set(seq, li);
    let before = null;
    for (let node = this.list.lastElementChild; node; node = node.previousElementSibling) {
      if (node.dataset.seq && Number(node.dataset.seq) < seq) break;
      if (node !== li) before = node;
    }
    this.#append(li, before);
    if (li.classList.contains('mine')) {
      this.#setStatus(li, 'sent');
      this.refreshReceipts();
    }
  }

  #append(li, before = null) {
    const list = this.list;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < STICKY_BOTTOM_PX;
    list.insertBefore(li, before);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  /** Marks: 🕓 pending, ✓ stored, ✓✓ every member has it; "read by N" of the others. */
  #setStatus(li, status, readers = 0) {
    const el = li.querySelector('.status');
    el.dataset.status = status;
    el.dataset.read = readers;
    const mark = {pending: '🕓', sent: '✓', delivered: '✓✓', failed: '⚠ not sent'}[status];
    el.textContent = readers > 0 ? `${mark} · read by ${readers}` : mark;
  }

  async #refreshReceipts() {
    const mine = [...this.#bySeq]
      .filter(([, li]) => li.classList.contains('mine'))
      .sort(([a], [b]) => a - b)
      .slice(-RECEIPT_WINDOW);
    await Promise.all(
      mine.map(async ([seq, li]) => {
        try {
          const {members, delivered, read} = await this.#client.receipts(this.name, seq);
          const status = members > 1 && delivered >= members ? 'delivered' : 'sent';
          this.#setStatus(li, status, Math.max(0, read - 1)); // the sender counts as a reader
        } catch {
          // Dropped or refused: the next push or reconnect asks again.
        }
      }),
    );
  }

  async #toggleReadBy(li) {
    const box = li.querySelector('.read-by');
    if (!box.hidden || !li.dataset.seq) {
      box.hidden = true;
      return;
    }
    box.replaceChildren('…');
    box.hidden = false;
    try {
      const users = (await this.#client.readBy(this.name, Number(li.dataset.seq))).filter((u) => u !== li.dataset.from);
      const names = users.length ? users.map((u) => h('span', {class: 'reader'}, u)) : [h('span', {class: 'none'}, 'nobody yet')];
      box.replaceChildren(h('span', {class: 'label'}, 'Read by'), ...names);
    } catch (error) {
      box.replaceChildren(`Unavailable: ${error.message}`);
    }
  }

  #paintPresence() {
    for (const li of this.list.children) this.#paintDot(li);
    this.onPresence(this);
  }

  #paintDot(li) {
    li.querySelector('.dot').classList.toggle('on', this.online.has(li.dataset.from));
  }
}
