// The page: sign-in, then the chat and meetings over one rushhour Client. The URL's
// hash says what is open (`#room=general`, `#meeting=m-…`), so links and reloads work.

import {Client} from './rushhour.js';
import {Chat} from './app-chat.js';
import {Meeting} from './app-meeting.js';
import {showConnection} from './app-status.js';
import {byId} from './app-dom.js';

/** The token of this tab's sign-in: it outlives a reload, not the tab. */
const AUTH_KEY = 'rushhour.auth';
/** Valid ids of the protocol (users, tenants, rooms, meetings). */
const ID = /^[A-Za-z0-9_.:@/-]{1,128}$/;
/** How long a notice stays up. */
const NOTICE_MS = 6000;

function notify(message) {
  const toast = byId('toast');
  toast.textContent = message;
  toast.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => (toast.hidden = true), NOTICE_MS);
}

/** A token from a `--dev` server, or the one pasted into the form. */
async function tokenFrom(form) {
  const pasted = form.elements.token.value.trim();
  if (pasted) return pasted;
  const user = form.elements.user.value.trim();
  const tenant = form.elements.tenant.value.trim();
  if (!ID.test(user) || !ID.test(tenant)) throw new Error('User and tenant: 1–128 of A–Z a–z 0–9 _ . : @ / -');
  const response = await fetch('/api/v1/dev-token', {
    method: 'POST',
    headers: {'content-type': 'application/json'},
    body: JSON.stringify({user, tenant}),
  });
  if (response.status === 404) throw new Error('This server issues no dev tokens: paste a token.');
  const reply = await response.json();
  if (!response.ok) throw new Error(reply.message);
  return reply.token;
}

function signIn() {
  const form = byId('sign-in');
  form.hidden = false;
  form.elements.user.focus();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const token = await tokenFrom(form);
      sessionStorage.setItem(AUTH_KEY, token);
      form.hidden = true;
      start(token);
    } catch (error) {
      byId('sign-in-error').textContent = error.message;
    }
  });
}

function signOut(message) {
  sessionStorage.removeItem(AUTH_KEY);
  if (message) sessionStorage.setItem(`${AUTH_KEY}.notice`, message);
  location.hash = '';
  location.reload();
}

function start(token) {
  const client = new Client({token});
  const chat = new Chat(client, notify);
  const meeting = new Meeting(client, {
    notify,
    onEnd: (message) => {
      if (message) notify(message);
      if (location.hash.startsWith('#meeting=')) location.hash = '';
      route();
    },
  });
  showConnection(client);
  window.addEventListener('hashchange', route);
  window.addEventListener('pagehide', () => client.flush()); // reads made just before
  byId('sign-out').addEventListener('click', () => {
    client.close();
    signOut(null);
  });

  function route() {
    const params = new URLSearchParams(location.hash.slice(1));
    const room = params.get('room');
    const meetingId = params.get('meeting');
    const view = meetingId ? 'meeting' : room ? 'chat' : 'empty';
    byId('workspace').dataset.view = view;
    byId('meeting-return').hidden = !meeting.id || view === 'meeting';
    if (meetingId) meeting.join(meetingId);
    else if (room) chat.open(room);
  }

  byId('join-room').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = event.target.elements.room;
    const room = input.value.trim();
    if (!ID.test(room)) return notify('A room name is 1–128 of A–Z a–z 0–9 _ . : @ / -');
    input.value = '';
    location.hash = `room=${encodeURIComponent(room)}`;
  });
  async function createMeeting(kind, mode) {
    try {
      const {meeting: id} = await client.createMeeting({title: `${client.user}'s ${kind}`, mode});
      location.hash = `meeting=${encodeURIComponent(id)}`;
    } catch (error) {
      notify(`Cannot create a ${kind}: ${error.message}`);
    }
  }
  byId('new-meeting').addEventListener('click', () => createMeeting('meeting', undefined));
  // A webinar: the creator presents, whoever joins by the link watches.
  byId('new-webinar').addEventListener('click', () => createMeeting('webinar', 'broadcast'));
  byId('join-meeting').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = event.target.elements.link;
    const text = input.value.trim();
    const id = new URLSearchParams(text.split('#')[1] ?? '').get('meeting') ?? text;
    if (!ID.test(id)) return notify('Paste a meeting link (…/#meeting=m-…) or id.');
    input.value = '';
    location.hash = `meeting=${encodeURIComponent(id)}`;
  });
  byId('meeting-return').addEventListener('click', (event) => {
    event.preventDefault();
    if (meeting.id) location.hash = `meeting=${encodeURIComponent(meeting.id)}`;
  });

  client.on('state', ({state, code}) => state === 'closed' && code === 4001 && signOut('Your sign-in expired or was refused.'));
  client.connect().then((welcome) => {
    byId('whoami').textContent = `${welcome.user} @ ${welcome.tenant}`;
    byId('sign-out').hidden = false;
    byId('workspace').hidden = false;
    route();
  });
}

function main() {
  const notice = sessionStorage.getItem(`${AUTH_KEY}.notice`);
  sessionStorage.removeItem(`${AUTH_KEY}.notice`);
  if (notice) notify(notice);
  const token = sessionStorage.getItem(AUTH_KEY);
  if (token) start(token);
  else signIn();
}

main();
