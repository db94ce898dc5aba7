// The proto3 wire format, only as much as clipserve's messages need: varints, 32/64-bit
// floats and length-delimited fields. Writers keep a list of chunks, so an image's bytes
// are copied once, when the finished message is joined.

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

export const VARINT = 0;
export const FIXED64 = 1;
export const LENGTH = 2;
export const FIXED32 = 5;

export class Writer {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }

  raw(bytes) {
    this.chunks.push(bytes);
    this.length += bytes.length;
    return this;
  }

  /** A non-negative integer below 2**53. */
  varint(value) {
    const out = [];
    let rest = value;
    while (rest > 0x7f) {
      out.push((rest % 128) | 0x80);
      rest = Math.floor(rest / 128);
    }
    out.push(rest);
    return this.raw(Uint8Array.from(out));
  }

  tag(field, wireType) {
    return this.varint(field * 8 + wireType);
  }

  string(field, value) {
    const bytes = utf8.encode(value);
    return this.tag(field, LENGTH).varint(bytes.length).raw(bytes);
  }

  bytes(field, value) {
    return this.tag(field, LENGTH).varint(value.length).raw(value);
  }

  bool(field, value) {
    return this.tag(field, VARINT).varint(value ? 1 : 0);
  }

  double(field, value) {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, value, true);
    return this.tag(field, FIXED64).raw(bytes);
  }

  /** A nested message, written by `build(writer)`. */
  message(field, build) {
    const inner = new Writer();
    build(inner);
    this.tag(field, LENGTH).varint(inner.length);
    for (const chunk of inner.chunks) this.raw(chunk);
    return this;
  }

  finish() {
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }
}

export class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes, start = 0, end = bytes.length) {
    this.buf = bytes;
    this.pos = start;
    this.end = end;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  more() {
    return this.pos < this.end;
  }

  varint() {
    let result = 0;
    let scale = 1;
    for (;;) {
      if (this.pos >= this.end) throw new RangeError('truncated varint');
      const byte = this.buf[this.pos++];
      result += (byte & 0x7f) * scale;
      if (!(byte & 0x80)) return result;
      scale *= 128;
      if (scale > 2 ** 70) throw new RangeError('varint too long');
    }
  }

  /** @returns {[number, number]} field number and wire type */
  tag() {
    const key = this.varint();
    return [Math.floor(key / 8), key % 8];
  }

  bytes() {
    const length = this.varint();
    if (this.pos + length > this.end) throw new RangeError('truncated field');
    const out = this.buf.subarray(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  string() {
    return fromUtf8.decode(this.bytes());
  }

  /** A reader over the next length-delimited field (a nested message). */
  message() {
    const length = this.varint();
    if (this.pos + length > this.end) throw new RangeError('truncated message');
    const inner = new Reader(this.buf, this.pos, this.pos + length);
    this.pos += length;
    return inner;
  }

  float() {
    if (this.pos + 4 > this.end) throw new RangeError('truncated float');
    const value = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return value;
  }

  skip(wireType) {
    if (wireType === VARINT) this.varint();
    else if (wireType === FIXED64) this.pos += 8;
    else if (wireType === LENGTH) this.bytes();
    else if (wireType === FIXED32) this.pos += 4;
    else throw new RangeError(`unsupported wire type ${wireType}`);
    if (this.pos > this.end) throw new RangeError('truncated field');
  }
}
