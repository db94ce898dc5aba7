// HTTP transport: one POST per request, through fetch(). Like the Python client, it reads
// /openapi.json once to pick the path (the endpoint itself if listed, else /default, else
// /post); a clipserve server announces itself there (`x-clipserve`), and then requests and
// replies travel as protobuf instead of JSON (raw float32 embeddings, no base64 images).

import { ServerUnavailableError, httpError } from './errors.js';
import { replyFromJson, requestToJson } from './json.js';
import { decodeReply, encodeRequest } from './messages.js';
import { abortable } from './signals.js';

const PROTOBUF = 'application/x-protobuf';

export class HttpTransport {
  /**
   * @param {{base: string, token?: string, fetch: typeof fetch, format: 'auto'|'json'|'protobuf'}} options
   */
  constructor(options) {
    this.base = options.base.replace(/\/+$/, '');
    this.token = options.token;
    this.fetch = options.fetch;
    this.format = options.format;
    this.discovery = null; // Promise<{paths: Set<string>, protobuf: boolean}>
  }

  async send(request, signal) {
    const { paths, protobuf } = await abortable(this.discover(), signal);
    const headers = {};
    if (this.token) headers.Authorization = this.token;
    let body;
    if (protobuf) {
      headers['Content-Type'] = PROTOBUF;
      headers.Accept = PROTOBUF;
      body = encodeRequest(request);
    } else {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(requestToJson(request));
    }
    const path = protobuf ? '/post' : pathFor(request.endpoint, paths);
    const response = await this.post(path, { method: 'POST', headers, body, signal });
    if (!response.ok) throw await errorOf(response, this.base);
    try {
      if (protobuf) return decodeReply(new Uint8Array(await response.arrayBuffer()));
      return replyFromJson(await response.json());
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw new ServerUnavailableError(`${this.base}: unreadable reply: ${error.message}`, {
        cause: error,
      });
    }
  }

  /** Shared by concurrent calls, so no one call's abort cancels it. */
  discover() {
    if (!this.discovery) {
      this.discovery = this.readOpenApi();
      this.discovery.catch(() => {
        this.discovery = null; // unreachable now: ask again on the next call
      });
    }
    return this.discovery;
  }

  async readOpenApi() {
    const response = await this.post('/openapi.json', {});
    const found = { paths: new Set(), protobuf: false };
    if (response.status === 401 || response.status === 403) {
      throw await errorOf(response, this.base);
    }
    if (response.ok) {
      try {
        const document = await response.json();
        for (const [path, methods] of Object.entries(document.paths || {})) {
          if (methods && typeof methods === 'object' && 'post' in methods) found.paths.add(path);
        }
        found.protobuf = Boolean(document['x-clipserve'] || document.info?.title === 'clipserve');
      } catch {
        // not JSON: post to /post as JSON
      }
    } else {
      await response.body?.cancel();
    }
    if (this.format !== 'auto') found.protobuf = this.format === 'protobuf';
    return found;
  }

  async post(path, init) {
    try {
      return await this.fetch(this.base + path, init);
    } catch (error) {
      if (init.signal?.aborted) throw init.signal.reason;
      throw new ServerUnavailableError(`cannot reach ${this.base}: ${error.message}`, {
        cause: error,
      });
    }
  }

  close() {}
}

function pathFor(endpoint, paths) {
  const head = `/${endpoint.replace(/^\/+/, '').split('/', 1)[0]}`;
  for (const candidate of [endpoint, head, '/default']) {
    if (candidate !== '/' && paths.has(candidate)) return candidate;
  }
  return '/post';
}

async function errorOf(response, url) {
  let reason = '';
  let name;
  try {
    const text = await response.text();
    reason = text.slice(0, 300);
    const body = JSON.parse(text);
    reason = body.error?.message || body.header?.status?.description || reason;
    name = body.error?.type;
  } catch {
    // not JSON: keep the text
  }
  return httpError(response.status, reason, url, name);
}
