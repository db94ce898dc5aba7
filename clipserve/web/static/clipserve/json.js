// jina's HTTP JSON form (what POST /post takes and returns), in the shapes of messages.js.

import { okStatus, toFloat32 } from './messages.js';

/** The body clip-client posts: header, parameters, data, exec_endpoint. */
export function requestToJson(request) {
  return {
    header: { request_id: request.requestId, exec_endpoint: request.endpoint },
    parameters: request.parameters || {},
    data: request.docs.map(docToJson),
    exec_endpoint: request.endpoint,
  };
}

function docToJson(doc) {
  const out = { id: doc.id };
  if (doc.blob) out.blob = toBase64(doc.blob);
  else if (doc.text) out.text = doc.text;
  if (doc.uri) out.uri = doc.uri;
  if (doc.mimeType) out.mime_type = doc.mimeType;
  if (doc.matches) out.matches = doc.matches.map(docToJson);
  return out;
}

/** A decoded JSON reply -> the reply shape of messages.js (unknown keys are ignored). */
export function replyFromJson(body) {
  if (!body || typeof body !== 'object') throw new TypeError('the reply is not a JSON object');
  const header = body.header || {};
  const status = okStatus();
  if (header.status) {
    status.code = Number(header.status.code) || 0;
    status.description = String(header.status.description || '');
    status.name = String(header.status.exception?.name || '');
  }
  let data = body.data || [];
  if (!Array.isArray(data)) data = data.docs || [];
  return {
    requestId: String(header.requestId ?? header.request_id ?? ''),
    endpoint: String(header.execEndpoint ?? header.exec_endpoint ?? ''),
    status,
    routes: (body.routes || []).map((route) => ({
      executor: String(route.executor || ''),
      startMs: parseTime(route.startTime ?? route.start_time),
      endMs: parseTime(route.endTime ?? route.end_time),
    })),
    docs: data.map(docFromJson),
  };
}

function docFromJson(item) {
  const scores = {};
  for (const [name, score] of Object.entries(item.scores || {})) {
    scores[name] = typeof score === 'number' ? score : Number(score?.value ?? 0);
  }
  return {
    id: String(item.id ?? ''),
    embedding: embeddingFromJson(item.embedding),
    scores,
    matches: (item.matches || []).map(docFromJson),
  };
}

function embeddingFromJson(value) {
  if (value == null) return null;
  if (Array.isArray(value)) return Float32Array.from(value.flat(Infinity), (x) => x ?? NaN);
  const dense = value.dense; // the protobuf-JSON form {dense: {buffer, shape, dtype}}
  if (dense?.buffer) return toFloat32(fromBase64(dense.buffer), dense.dtype || '<f4');
  return null;
}

/** RFC 3339 time -> milliseconds since the epoch, keeping sub-millisecond digits. */
export function parseTime(text) {
  if (!text) return 0;
  const match = /^([^.]*?)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$/i.exec(String(text));
  if (!match) return 0;
  const whole = Date.parse(match[1] + (match[3] || 'Z'));
  const fraction = match[2] ? Number(`0${match[2]}`) * 1000 : 0;
  return Number.isFinite(whole) ? whole + fraction : 0;
}

export function toBase64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function fromBase64(text) {
  const binary = atob(text.replace(/\s+/g, ''));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
