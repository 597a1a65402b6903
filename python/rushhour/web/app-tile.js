// One video tile of a meeting: the participant's media, name, role, mute mark, its
// state (`connected` or `reconnecting`, from the roster) and the host's controls.

import {h} from './app-dom.js';

export class Tile {
  /**
   * @param {string} participant the participant id
   * @param {{local: boolean, onAction: (action: string, participant: string) => void}} options
   *   `onAction` gets `mute`, `remove` or `host` from the host's buttons
   */
  constructor(participant, {local, onAction}) {
    this.participant = participant;
    this.local = local;
    this.video = h('video', {playsinline: true});
    this.video.muted = local; // never play our own microphone back
    this.name = h('span', {class: 'name'});
    this.badges = h('span', {class: 'badges'});
    this.unmute = h('button', {type: 'button', class: 'unmute', hidden: true}, '🔈 Sound on');
    this.unmute.addEventListener('click', () => {
      this.video.muted = false;
      this.unmute.hidden = true;
    });
    const action = (name, label) =>
      h('button', {type: 'button', dataset: {action: name}, on: {click: () => onAction(name, participant)}}, label);
    this.controls = h('div', {class: 'host-controls', hidden: true}, action('mute', 'Mute'), action('remove', 'Remove'), action('host', 'Make host'));
    this.el = h(
      'figure',
      {class: 'tile', dataset: {participant, state: 'connected', media: local ? 'local' : 'new', ...(local && {local: ''})}},
      this.video,
      h('div', {class: 'overlay'}, 'Reconnecting…'),
      h('figcaption', {}, this.name, this.badges, this.unmute),
      local ? null : this.controls,
    );
  }

  /** Shows the roster object `p`; `hostView`: this page holds the host role. */
  update(p, hostView) {
    this.name.textContent = (p.name ?? p.user) + (this.local ? ' (you)' : '');
    this.el.dataset.state = p.state;
    this.el.dataset.role = p.role;
    this.el.dataset.muted = p.muted;
    this.badges.replaceChildren(...[p.role === 'host' && h('span', {class: 'role'}, 'host'), p.muted && h('span', {class: 'muted'}, '🔇')].filter(Boolean));
    this.controls.hidden = !hostView;
  }

  /** Plays `stream`; a browser that refuses sound before a click plays it muted first. */
  show(stream) {
    if (this.video.srcObject === stream) return;
    this.video.srcObject = stream;
    this.video.play().catch((error) => {
      // AbortError: a newer stream replaced this one, and plays itself.
      if (error.name !== 'NotAllowedError' || this.video.muted) return;
      this.video.muted = true;
      this.unmute.hidden = false;
      this.video.play().catch(() => {});
    });
  }

  /** The peer connection's state (`new`, `connecting`, `connected`, `failed` …). */
  set media(state) {
    this.el.dataset.media = state;
  }
}
