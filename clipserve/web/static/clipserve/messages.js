// DataRequestProto in and out (field numbers: clipserve/wire/proto/clipserve_wire.proto).
//
// Inside the client a request is {requestId, endpoint, parameters, docs} where a doc is
// {id, text} or {id, blob: Uint8Array, mimeType, uri}, optionally with `matches` (docs);
// a reply is {requestId, status: {code, description, name}, routes: [{executor, startMs,
// endMs}], docs: [{id, embedding: Float32Array|null, scores: {name: value}, matches}]}.
// The HTTP JSON form (json.js) reads and writes the same shapes.

import { FIXED32, LENGTH, Reader, Writer } from './protobuf.js';

export const STATUS_ERROR = 1;

/** @returns {Uint8Array} a serialized DataRequestProto */
export function encodeRequest(request) {
  const w = new Writer();
  w.message(1, (header) => {
    header.string(1, request.requestId);
    header.string(3, request.endpoint);
  });
  if (request.parameters && Object.keys(request.parameters).length) {
    w.message(2, (struct) => writeStruct(struct, request.parameters));
  }
  w.message(4, (data) =>
    data.message(1, (array) => {
      for (const doc of request.docs) array.message(1, (d) => writeDoc(d, doc));
    }),
  );
  return w.finish();
}

function writeDoc(w, doc) {
  w.string(1, doc.id);
  if (doc.blob) w.bytes(2, doc.blob);
  else if (doc.text) w.string(4, doc.text);
  if (doc.uri) w.string(9, doc.uri);
  if (doc.mimeType) w.string(11, doc.mimeType);
  for (const match of doc.matches || []) w.message(15, (m) => writeDoc(m, match));
}

// google.protobuf.Struct: map<string, Value> fields = 1
function writeStruct(w, object) {
  for (const [key, value] of Object.entries(object)) {
    if (value === undefined) continue;
    w.message(1, (entry) => {
      entry.string(1, key);
      entry.message(2, (v) => writeValue(v, value));
    });
  }
}

function writeValue(w, value) {
  if (value === null) w.tag(1, 0).varint(0);
  else if (typeof value === 'number') w.double(2, value);
  else if (typeof value === 'string') w.string(3, value);
  else if (typeof value === 'boolean') w.bool(4, value);
  else if (Array.isArray(value)) {
    w.message(6, (list) => {
      for (const item of value) list.message(1, (v) => writeValue(v, item));
    });
  } else if (typeof value === 'object') w.message(5, (s) => writeStruct(s, value));
  else throw new TypeError(`parameter value ${String(value)} cannot be sent`);
}

/** @param {Uint8Array} bytes a serialized DataRequestProto */
export function decodeReply(bytes) {
  const reply = { requestId: '', endpoint: '', status: okStatus(), routes: [], docs: [] };
  const r = new Reader(bytes);
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) readHeader(r.message(), reply);
    else if (field === 3 && type === LENGTH) reply.routes.push(readRoute(r.message()));
    else if (field === 4 && type === LENGTH) readData(r.message(), reply.docs);
    else r.skip(type);
  }
  return reply;
}

export function okStatus() {
  return { code: 0, description: '', name: '' };
}

function readHeader(r, reply) {
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) reply.requestId = r.string();
    else if (field === 2 && type === LENGTH) reply.status = readStatus(r.message());
    else if (field === 3 && type === LENGTH) reply.endpoint = r.string();
    else r.skip(type);
  }
}

function readStatus(r) {
  const status = okStatus();
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === 0) status.code = r.varint();
    else if (field === 2 && type === LENGTH) status.description = r.string();
    else if (field === 3 && type === LENGTH) status.name = readExceptionName(r.message());
    else r.skip(type);
  }
  return status;
}

function readExceptionName(r) {
  let name = '';
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) name = r.string();
    else r.skip(type);
  }
  return name;
}

function readRoute(r) {
  const route = { executor: '', startMs: 0, endMs: 0 };
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) route.executor = r.string();
    else if (field === 2 && type === LENGTH) route.startMs = readTimestamp(r.message());
    else if (field === 3 && type === LENGTH) route.endMs = readTimestamp(r.message());
    else r.skip(type);
  }
  return route;
}

function readTimestamp(r) {
  let seconds = 0;
  let nanos = 0;
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === 0) seconds = r.varint();
    else if (field === 2 && type === 0) nanos = r.varint();
    else r.skip(type);
  }
  return seconds * 1000 + nanos / 1e6;
}

function readData(r, docs) {
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) {
      const array = r.message();
      while (array.more()) {
        const [f, t] = array.tag();
        if (f === 1 && t === LENGTH) docs.push(readDoc(array.message()));
        else array.skip(t);
      }
    } else r.skip(type);
  }
}

function readDoc(r) {
  const doc = { id: '', embedding: null, scores: {}, matches: [] };
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) doc.id = r.string();
    else if (field === 15 && type === LENGTH) doc.matches.push(readDoc(r.message()));
    else if (field === 16 && type === LENGTH) doc.embedding = readNdArray(r.message());
    else if (field === 18 && type === LENGTH) readScore(r.message(), doc.scores);
    else r.skip(type);
  }
  return doc;
}

function readScore(r, scores) {
  let key = '';
  let value = 0;
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) key = r.string();
    else if (field === 2 && type === LENGTH) {
      const score = r.message();
      while (score.more()) {
        const [f, t] = score.tag();
        if (f === 1 && t === FIXED32) value = score.float();
        else score.skip(t);
      }
    } else r.skip(type);
  }
  scores[key] = value;
}

// NdArrayProto: dense (1) = DenseNdArrayProto {buffer 1, shape 2, dtype 3}
function readNdArray(r) {
  let buffer = null;
  let dtype = '';
  while (r.more()) {
    const [field, type] = r.tag();
    if (field === 1 && type === LENGTH) {
      const dense = r.message();
      while (dense.more()) {
        const [f, t] = dense.tag();
        if (f === 1 && t === LENGTH) buffer = dense.bytes();
        else if (f === 3 && t === LENGTH) dtype = dense.string();
        else dense.skip(t);
      }
    } else r.skip(type);
  }
  return buffer && buffer.length ? toFloat32(buffer, dtype) : null;
}

/** Raw array bytes with a numpy dtype string ("<f4", ">f8", "<f2", "float32"...) -> floats. */
export function toFloat32(bytes, dtype) {
  const little = !dtype.startsWith('>');
  const name = dtype.replace(/^[<>|=]/, '');
  const size = { f4: 4, float32: 4, f8: 8, float64: 8, f2: 2, float16: 2 }[name];
  if (!size || bytes.length % size) {
    throw new RangeError(`embedding of dtype ${JSON.stringify(dtype)} cannot be read`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.length / size);
  for (let i = 0; i < out.length; i++) {
    const at = i * size;
    if (size === 4) out[i] = view.getFloat32(at, little);
    else if (size === 8) out[i] = view.getFloat64(at, little);
    else out[i] = halfToFloat(view.getUint16(at, little));
  }
  return out;
}

function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}
