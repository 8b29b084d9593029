// The WebSocket: one connection at a time, automatic reconnect with backoff and jitter.
import { backoffDelay } from './format.js';

const BANNED_CLOSE = 4003;

/**
 * A self-healing WebSocket. `onMessage(type, data)` gets each server event,
 * `onOpen()` each new connection, `onState(state)` connected | reconnecting | offline.
 */
export class Connection {
  constructor({ url, onOpen, onMessage, onState }) {
    this.url = url;
    this.onOpen = onOpen;
    this.onMessage = onMessage;
    this.onState = onState;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.authed = false;
    window.addEventListener('online', () => this.retryNow());
    window.addEventListener('offline', () => {
      if (!this.stopped) this.onState('offline');
    });
  }

  /** Open the connection (and keep it open until stop()). */
  start() {
    this.stopped = false;
    this.open();
  }

  /** Close for good (logout, ban). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
      this.socket = null;
    }
    this.onState('offline');
  }

  /** The connection is authenticated: the next drop starts the backoff from 0.5 s again. */
  markHealthy() {
    this.attempt = 0;
    this.authed = true;
    this.onState('connected');
  }

  /** Send one client→server message; false when not connected (or not yet authenticated). */
  send(type, fields = {}) {
    if (!this.isOpen || (!this.authed && type !== 'authenticate')) return false;
    this.socket.send(JSON.stringify({ type, ...fields }));
    return true;
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  retryNow() {
    if (this.stopped || this.isOpen) return;
    clearTimeout(this.timer);
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close();
    }
    this.authed = false;
    this.onState('reconnecting');
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => this.onOpen();
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to interpret: the server only sends JSON
      }
      this.onMessage(frame.type, frame.data ?? {});
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.authed = false;
      if (this.stopped) return;
      if (event.code === BANNED_CLOSE) {
        this.stop();
        return;
      }
      this.schedule();
    };
  }

  schedule() {
    this.onState(navigator.onLine === false ? 'offline' : 'reconnecting');
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.open(), delay);
  }
}
