// Client: the public face, mirroring the Python client (encode, rank, profile, close).

import { RemoteError, errorClassForName } from './errors.js';
import { HttpTransport } from './http.js';
import { canShrinkImages } from './images.js';
import { prepareDoc } from './inputs.js';
import { randomId, runJob } from './jobs.js';
import { STATUS_ERROR } from './messages.js';
import { WebSocketTransport } from './websocket.js';

export const DEFAULTS = Object.freeze({
  batchSize: 32,
  prefetch: 4,
  timeout: 300_000,
  retries: 0,
  retryBackoff: 500,
  httpFormat: 'auto',
});
const DEFAULT_PARAMETERS = Object.freeze({ drop_image_content: true });
const SCHEMES = {
  'http:': 'http',
  'https:': 'http',
  'ws:': 'websocket',
  'wss:': 'websocket',
  'websocket:': 'websocket',
  'websockets:': 'websocket',
};
const TLS_SCHEMES = new Set(['https:', 'wss:', 'websockets:']);

export class Client {
  /**
   * @param {string | URL} url http(s):// or ws(s):// (also websocket(s)://); relative
   *   URLs resolve against the page in a browser
   * @param {import('../clipserve').ClientOptions} [options]
   */
  constructor(url, options = {}) {
    const address = parseAddress(url);
    this.url = address.display;
    this.protocol = address.protocol;
    const settings = { ...DEFAULTS, ...withoutUndefined(options) };
    this.batchSize = positiveInteger(settings.batchSize, 'batchSize');
    this.prefetch = positiveInteger(settings.prefetch, 'prefetch');
    this.retries = nonNegativeInteger(settings.retries, 'retries');
    this.retryBackoff = nonNegative(settings.retryBackoff, 'retryBackoff');
    this.timeout = settings.timeout ? nonNegative(settings.timeout, 'timeout') : 0;
    this.imageMaxSide = checkImageMaxSide(settings.imageMaxSide);
    this.fetch = settings.fetch ?? globalThis.fetch?.bind(globalThis);
    if (typeof this.fetch !== 'function') throw new TypeError('this runtime has no fetch()');
    if (!['auto', 'json', 'protobuf'].includes(settings.httpFormat)) {
      throw new RangeError(`httpFormat must be auto, json or protobuf, not ${settings.httpFormat}`);
    }
    const token = settings.token || undefined;
    if (address.protocol === 'websocket') {
      const WebSocketClass = settings.WebSocket ?? globalThis.WebSocket;
      if (typeof WebSocketClass !== 'function') {
        throw new TypeError(
          'this runtime has no WebSocket: use an http(s):// URL, pass {WebSocket} ' +
            '(the ws package), or run Node >= 22 (or 20 with --experimental-websocket)',
        );
      }
      this.transport = new WebSocketTransport({
        url: address.ws,
        token,
        WebSocket: WebSocketClass,
      });
    } else {
      this.transport = new HttpTransport({
        base: address.http,
        token,
        fetch: this.fetch,
        format: settings.httpFormat,
      });
    }
  }

  /**
   * Embeddings of `inputs` in input order (Float32Array each).
   * @param {Iterable<unknown> | AsyncIterable<unknown>} inputs
   * @param {import('../clipserve').CallOptions} [options]
   */
  async encode(inputs, options = {}) {
    return runJob(this.job('/encode', inputs, options, false));
  }

  /**
   * Each query's `matches` ranked by CLIP score, best first.
   * @param {Iterable<object> | AsyncIterable<object>} queries
   */
  async rank(queries, options = {}) {
    return runJob(this.job('/rank', queries, options, true));
  }

  /** Where the time of one request goes, in milliseconds. */
  async profile(content = '', { signal } = {}) {
    const context = { fetch: this.fetch, signal, imageMaxSide: this.imageMaxSide };
    const doc = content ? await prepareDoc(content, 'profile', context) : { id: 'profile' };
    const request = {
      requestId: randomId(),
      endpoint: '/',
      parameters: { __results__: {} },
      docs: [doc],
    };
    const started = performance.now();
    const reply = await this.transport.send(request, signal);
    const roundtrip = performance.now() - started;
    if (reply.status.code === STATUS_ERROR) {
      const Kind = errorClassForName(reply.status.name);
      throw new Kind(`${this.url}: ${reply.status.description || 'profile request failed'}`);
    }
    if (!reply.routes.length) throw new RemoteError(`${this.url}: the server sent no timings`);
    const span = (route) => Math.max(0, route.endMs - route.startMs);
    const serverMs = Math.min(span(reply.routes[0]), roundtrip);
    const modelMs = Math.min(Math.max(0, ...reply.routes.slice(1).map(span)), serverMs);
    return {
      roundtrip,
      clientServerNetwork: roundtrip - serverMs,
      server: serverMs,
      gatewayNetwork: serverMs - modelMs,
      model: modelMs,
    };
  }

  /** Closes the WebSocket (after the server answers what it was sent). Idempotent. */
  close() {
    this.transport.close();
  }

  job(endpoint, inputs, options, rank) {
    const settings = withoutUndefined(options);
    const parameters = { ...DEFAULT_PARAMETERS, ...(settings.parameters || {}) };
    const model = parameters.model_name;
    return {
      transport: this.transport,
      url: this.url,
      endpoint: model ? `${endpoint}/${model}` : endpoint,
      parameters,
      inputs,
      rank,
      batchSize: positiveInteger(settings.batchSize ?? this.batchSize, 'batchSize'),
      prefetch: positiveInteger(settings.prefetch ?? this.prefetch, 'prefetch'),
      timeout: this.timeout,
      retries: this.retries,
      retryBackoff: this.retryBackoff,
      signal: settings.signal,
      onProgress: settings.onProgress,
      onBatch: settings.onBatch,
      fetch: this.fetch,
      imageMaxSide: checkImageMaxSide(settings.imageMaxSide ?? this.imageMaxSide),
    };
  }
}

function parseAddress(url) {
  const base = globalThis.location?.href;
  let parsed;
  try {
    parsed = base ? new URL(String(url), base) : new URL(String(url));
  } catch {
    throw new TypeError(`${JSON.stringify(String(url))} is not a server URL (http://host:port)`);
  }
  if (parsed.protocol === 'grpc:' || parsed.protocol === 'grpcs:') {
    throw new TypeError('gRPC is not available in JavaScript: use http(s):// or ws(s)://');
  }
  const protocol = SCHEMES[parsed.protocol];
  if (!protocol) throw new TypeError(`unsupported scheme ${parsed.protocol} in ${parsed.href}`);
  const tls = TLS_SCHEMES.has(parsed.protocol);
  const rest = `${parsed.host}${parsed.pathname}`;
  return {
    protocol,
    display: `${parsed.protocol}//${parsed.host}`,
    http: `${tls ? 'https' : 'http'}://${rest}`,
    ws: `${tls ? 'wss' : 'ws'}://${rest}`,
  };
}

function withoutUndefined(object) {
  return Object.fromEntries(Object.entries(object || {}).filter(([, v]) => v !== undefined));
}

function positiveInteger(value, name) {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}

function nonNegativeInteger(value, name) {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
  return value;
}

function nonNegative(value, name) {
  if (typeof value !== 'number' || !(value >= 0)) {
    throw new RangeError(`${name} must be a number >= 0, got ${value}`);
  }
  return value;
}

function checkImageMaxSide(value) {
  if (value === undefined || value === null || value === 0) return undefined;
  positiveInteger(value, 'imageMaxSide');
  if (!canShrinkImages()) {
    throw new TypeError(
      'imageMaxSide needs createImageBitmap and a canvas (a browser); this runtime has neither',
    );
  }
  return value;
}
