// The connection as the user sees it: a status pill in the top bar, and a banner with
// a countdown while an overloaded server has asked us to wait.

import {byId} from './app-dom.js';

/** The countdown is redrawn this often: smooth enough for whole seconds. */
const TICK_MS = 250;

const LABELS = {idle: '', connecting: 'Connecting…', open: 'Connected', closed: 'Disconnected'};

/** Shows `client`'s connection state from now on. */
export function showConnection(client) {
  const pill = byId('conn');
  const banner = byId('banner');
  const countdown = byId('banner-countdown');
  let timer = null;
  client.on('state', (detail) => {
    clearInterval(timer);
    pill.dataset.state = detail.state;
    if (detail.state === 'open' || detail.state === 'closed') banner.hidden = true;
    if (detail.state === 'waiting') banner.hidden = !detail.overloaded;
    if (detail.state === 'waiting' && detail.overloaded) {
      byId('banner-queue').textContent = detail.queuePos ? ` About ${detail.queuePos} people are ahead of you.` : '';
    }
    const paint = () => {
      if (detail.state !== 'waiting') {
        pill.textContent = LABELS[detail.state];
        countdown.textContent = 'now';
        return;
      }
      const seconds = Math.max(0, Math.ceil((detail.retryAt - Date.now()) / 1000));
      pill.textContent = `Reconnecting in ${seconds} s`;
      countdown.textContent = `in ${seconds} s`;
      countdown.dataset.seconds = seconds;
    };
    paint();
    if (detail.state === 'waiting') timer = setInterval(paint, TICK_MS);
  });
}
