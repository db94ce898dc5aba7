// WebSocket transport: one connection per client, opened on first use and shared by every
// call; each request and each reply is one binary frame (a DataRequestProto), matched by
// request id, so calls run side by side. A token goes in a first text frame
// {"authorization": token}: browsers cannot set headers on a WebSocket, and a token in the
// URL would end up in logs. A lost connection fails the requests waiting on it; the next
// request opens a new one.

import { ServerUnavailableError, wsCloseError } from './errors.js';
import { decodeReply, encodeRequest } from './messages.js';
import { abortable } from './signals.js';

const SUBPROTOCOL = 'bytes';
const END_OF_INPUT = Uint8Array.of(0);
const OPEN = 1;

export class WebSocketTransport {
  /** @param {{url: string, token?: string, WebSocket: typeof WebSocket}} options */
  constructor(options) {
    this.url = options.url;
    this.token = options.token;
    this.WebSocket = options.WebSocket;
    this.connection = null; // Promise<Connection>
  }

  async send(request, signal) {
    let connection = await abortable(this.connect(), signal);
    if (connection.socket.readyState !== OPEN) {
      this.forget(connection); // closing: start a fresh one
      connection = await abortable(this.connect(), signal);
    }
    return connection.send(request, signal);
  }

  connect() {
    if (!this.connection) {
      const opening = Connection.open(this);
      this.connection = opening;
      opening.catch(() => this.connection === opening && (this.connection = null));
    }
    return this.connection;
  }

  forget(connection) {
    const current = this.connection;
    current?.then(
      (open) => open === connection && this.connection === current && (this.connection = null),
      () => {},
    );
  }

  /** Ends the connection: the server finishes what it was sent, then closes. */
  close() {
    const connection = this.connection;
    this.connection = null;
    connection?.then(
      (c) => c.end(),
      () => {},
    );
  }
}

class Connection {
  /** @returns {Promise<Connection>} once the socket is open (and the token sent) */
  static open(transport) {
    return new Promise((resolve, reject) => {
      let socket;
      try {
        socket = new transport.WebSocket(transport.url, [SUBPROTOCOL]);
      } catch (error) {
        reject(new ServerUnavailableError(`cannot open ${transport.url}: ${error.message}`));
        return;
      }
      const connection = new Connection(socket, transport.url);
      socket.addEventListener('open', () => {
        connection.opened = true;
        if (transport.token) socket.send(JSON.stringify({ authorization: transport.token }));
        resolve(connection);
      });
      // a failed connection fires 'error' (and, in browsers, then 'close'; not in Node 20)
      socket.addEventListener('error', () => {
        transport.forget(connection);
        const error = new ServerUnavailableError(
          connection.opened
            ? `${transport.url}: the WebSocket connection failed`
            : `cannot connect to ${transport.url} (WebSocket)`,
        );
        reject(error);
        connection.fail(error);
      });
      socket.addEventListener('close', (event) => {
        transport.forget(connection);
        const why = event.reason ? `: ${event.reason}` : '';
        const error = connection.opened
          ? wsCloseError(event.code, event.reason, transport.url)
          : new ServerUnavailableError(
              `cannot connect to ${transport.url} (WebSocket closed with code ${event.code}${why})`,
            );
        reject(error);
        connection.fail(error);
      });
    });
  }

  constructor(socket, url) {
    this.socket = socket;
    this.url = url;
    this.opened = false;
    this.waiting = new Map(); // request id -> {resolve, reject}
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('message', (event) => this.receive(event.data));
  }

  send(request, signal) {
    return new Promise((resolve, reject) => {
      const id = request.requestId;
      const onAbort = () => {
        this.waiting.delete(id); // its reply, if one comes, is dropped
        reject(signal.reason);
      };
      const settle = (finish) => (value) => {
        signal?.removeEventListener('abort', onAbort);
        this.waiting.delete(id);
        finish(value);
      };
      this.waiting.set(id, { resolve: settle(resolve), reject: settle(reject) });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.socket.send(encodeRequest(request));
    });
  }

  receive(data) {
    if (typeof data === 'string') return; // the server sends binary frames only
    let reply;
    try {
      reply = decodeReply(new Uint8Array(data));
    } catch (error) {
      this.fail(new ServerUnavailableError(`${this.url}: unreadable reply: ${error.message}`));
      this.socket.close(1002, 'unreadable reply');
      return;
    }
    this.waiting.get(reply.requestId)?.resolve(reply);
  }

  fail(error) {
    for (const entry of [...this.waiting.values()]) entry.reject(error);
  }

  end() {
    if (this.socket.readyState === OPEN) this.socket.send(END_OF_INPUT);
  }
}
