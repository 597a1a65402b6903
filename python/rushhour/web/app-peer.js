// One RTCPeerConnection of the meeting mesh, negotiated with the perfect-negotiation
// pattern: both sides may offer at any time; on a collision the impolite side ignores
// the other's offer and the polite side rolls its own back. Politeness comes from the
// participant ids, so the two sides always disagree.
//
// Every signal names the peer connection that sent it (`pc`) and, once known, the one
// it is for (`to`): a reloaded page keeps its participant id but starts a new peer
// connection, and its first offer tells the other side to start afresh too. A side
// without media (a broadcast's viewer) receives only.

/** Loopback and LAN meshes need no STUN or TURN server. */
const RTC_CONFIG = {iceServers: []};

export const newPeerId = () => Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');

export class Peer {
  /** This side's id for this peer connection. */
  id = newPeerId();
  /** The remote side's id, from its first signal. */
  remoteId = null;

  #pc = new RTCPeerConnection(RTC_CONFIG);
  #polite;
  #stream;
  #send;
  #makingOffer = false;
  #ignoreOffer = false;
  #answerPending = false;
  #attached = false;
  #queue = Promise.resolve(); // signals are handled one at a time, in order

  /**
   * @param {object} options
   * @param {boolean} options.polite yield on offer collisions
   * @param {MediaStream | null} options.stream local media to send
   * @param {(data: object) => void} options.send relays a signal to the remote side
   * @param {(stream: MediaStream) => void} options.onStream the remote media arrived
   * @param {(state: string) => void} options.onState connectionState changed; it may
   *   close the peer (then ICE is not restarted)
   */
  constructor({polite, stream, send, onStream, onState}) {
    this.#polite = polite;
    this.#stream = stream;
    this.#send = send;
    const pc = this.#pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.#makingOffer = true;
        await pc.setLocalDescription();
        this.#signal({description: pc.localDescription.toJSON()});
      } catch (error) {
        if (pc.signalingState !== 'closed') console.error('rushhour: offer failed', error);
      } finally {
        this.#makingOffer = false;
      }
    };
    pc.onicecandidate = ({candidate}) => candidate && this.#signal({candidate: candidate.toJSON()});
    pc.ontrack = ({track, streams}) => onStream(streams[0] ?? new MediaStream([track]));
    pc.onconnectionstatechange = () => {
      onState(pc.connectionState);
      if (pc.connectionState === 'failed' && pc.signalingState !== 'closed') pc.restartIce();
    };
  }

  /** Starts negotiating from this side (it has something to send). */
  start() {
    this.#attach();
  }

  /** A signal from the remote side. */
  handle(data) {
    this.remoteId ??= data.pc;
    this.#queue = this.#queue
      .then(() => this.#handle(data))
      .catch((error) => this.#pc.signalingState !== 'closed' && console.error('rushhour: signal failed', error));
  }

  /** The peer connection's connectionState. */
  get state() {
    return this.#pc.connectionState;
  }

  /** Sends `stream` too from now on (this side became a presenter): renegotiates. */
  publish(stream) {
    this.#stream = stream;
    if (!this.#attached) return; // #attach will add it
    // Each track takes an unused receive-only transceiver of its kind, if any.
    for (const track of stream.getTracks()) this.#pc.addTrack(track, stream);
  }

  /** Tells the remote side to forget this peer connection: this side is going. */
  bye() {
    this.#signal({bye: true});
  }

  close() {
    this.#pc.close();
  }

  async #handle({description, candidate}) {
    const pc = this.#pc;
    if (description) {
      const readyForOffer = !this.#makingOffer && (pc.signalingState === 'stable' || this.#answerPending);
      const collision = description.type === 'offer' && !readyForOffer;
      this.#ignoreOffer = !this.#polite && collision;
      if (this.#ignoreOffer) return;
      this.#answerPending = description.type === 'answer';
      await pc.setRemoteDescription(description); // a polite side's own offer rolls back
      this.#answerPending = false;
      if (description.type === 'offer') {
        this.#attach(); // after the offer: our tracks take its transceivers
        await pc.setLocalDescription();
        this.#signal({description: pc.localDescription.toJSON()});
      }
    } else if (candidate) {
      try {
        await pc.addIceCandidate(candidate);
      } catch (error) {
        if (!this.#ignoreOffer) throw error; // candidates of an ignored offer may fail
      }
    }
  }

  /** Adds the local tracks, or receive-only transceivers when there is no media. */
  #attach() {
    if (this.#attached) return;
    this.#attached = true;
    if (this.#stream) {
      for (const track of this.#stream.getTracks()) this.#pc.addTrack(track, this.#stream);
    } else if (this.#pc.signalingState === 'stable') {
      for (const kind of ['audio', 'video']) this.#pc.addTransceiver(kind, {direction: 'recvonly'});
    }
  }

  #signal(data) {
    this.#send({...data, pc: this.id, ...(this.remoteId && {to: this.remoteId})});
  }
}
