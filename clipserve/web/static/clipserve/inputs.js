// One input -> the document sent. Strings are sentences unless they name an image (the
// rule of the Python client's detect.py, minus local files, which JavaScript reads
// itself: pass their bytes). Images travel as bytes (`blob`) with their MIME type.
//
// checkInput() runs before anything is sent and throws TypeError for misuse;
// prepareDoc() may fail one input alone with an InvalidInputError (a broken data: URI,
// an image URL that cannot be fetched), which the call reports with the server's failures.

import { InvalidInputError } from './errors.js';
import { shrinkImage } from './images.js';
import { fromBase64 } from './json.js';

const IMAGE_EXTENSIONS = new Set(
  (
    'jpg jpeg jpe jfif png apng gif bmp dib webp tif tiff ico ppm pgm pbm pnm tga avif heic ' +
    'heif jp2 j2k pcx icns eps dds psd qoi'
  ).split(' '),
);

/** @returns {'text' | 'image' | 'image-url' | 'image-path'} */
export function classifyString(text) {
  const head = text.slice(0, 8).toLowerCase();
  if (head.startsWith('data:')) return text.includes(',') ? 'image' : 'text';
  const spaced = /\s/.test(text);
  if (head.startsWith('http://') || head.startsWith('https://')) {
    const rest = text.split('://', 2)[1];
    return rest && !'/?#'.includes(rest[0]) && !spaced ? 'image-url' : 'text';
  }
  if (!spaced && text.length <= 4096) {
    const name = text.split(/[?#]/, 1)[0].split('/').pop();
    const dot = name.lastIndexOf('.');
    if (dot > 0 && IMAGE_EXTENSIONS.has(name.slice(dot + 1).toLowerCase())) return 'image-path';
  }
  return 'text';
}

function isBytes(value) {
  return value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

function isBlob(value) {
  return typeof Blob !== 'undefined' && value instanceof Blob;
}

/** Throws TypeError unless `input` is something encode() can send. */
export function checkInput(input, position) {
  if (typeof input === 'string' || isBlob(input) || isBytes(input) || input instanceof URL) {
    return;
  }
  if (input && typeof input === 'object') {
    const { text, blob, uri } = input;
    if (typeof text === 'string' || isBlob(blob) || isBytes(blob) || typeof uri === 'string') {
      return;
    }
  }
  const kind =
    input === null ? 'null' : typeof input === 'object' ? input.constructor?.name : typeof input;
  throw new TypeError(
    `input #${position} is ${kind || 'an object'}; pass a string, Blob, File, ArrayBuffer, ` +
      'typed array, URL, or an object with text, blob or uri',
  );
}

/** Throws TypeError unless `query` is a rank query: a document with candidate `matches`. */
export function checkQuery(query, position) {
  if (!query || typeof query !== 'object' || !Array.isArray(query.matches)) {
    throw new TypeError(`rank() query #${position} must be an object with a matches array`);
  }
  if (!query.matches.length) throw new TypeError(`rank() query #${position} has no matches`);
  checkInput(query, position);
  query.matches.forEach((match, j) => checkInput(match, `${position}.${j}`));
}

/**
 * The document for one input, with id `id`; match j of a rank query gets id `${id}.${j}`.
 * @param {{fetch: typeof fetch, signal?: AbortSignal, imageMaxSide?: number}} context
 */
export async function prepareDoc(input, id, context, withMatches = false) {
  const doc = await contentOf(input, context);
  doc.id = id;
  if (withMatches) {
    doc.matches = await Promise.all(
      input.matches.map((match, j) => prepareDoc(match, `${id}.${j}`, context)),
    );
  }
  return doc;
}

async function contentOf(input, context) {
  if (typeof input === 'string') return fromString(input, context);
  if (input instanceof URL) return fromUrl(input.href, context);
  if (isBlob(input) || isBytes(input)) return image(input, input.type, context);
  if (typeof input.text === 'string') return { text: input.text, mimeType: 'text/plain' };
  if (input.blob != null) return image(input.blob, input.mimeType || input.blob.type, context);
  return fromString(input.uri, context, true);
}

async function fromString(text, context, isImage = false) {
  const kind = classifyString(text);
  if (kind === 'text' && !isImage) return { text, mimeType: 'text/plain' };
  if (kind === 'image' || text.slice(0, 5).toLowerCase() === 'data:') {
    const [mimeType, bytes] = decodeDataUri(text);
    return image(bytes, mimeType, context);
  }
  if (kind === 'image-url') return fromUrl(text, context);
  const base = globalThis.document?.baseURI ?? globalThis.location?.href;
  if (!base) {
    throw new InvalidInputError(
      `${describe(text)} names no image this runtime can fetch; pass the image's bytes ` +
        '(a Blob, or fs.readFile in Node) or an http(s) or data: URL',
    );
  }
  return fromUrl(new URL(text, base).href, context);
}

async function fromUrl(url, context) {
  let response;
  try {
    response = await context.fetch(url, { signal: context.signal });
  } catch (error) {
    if (context.signal?.aborted) throw context.signal.reason;
    throw new InvalidInputError(`cannot fetch image ${describe(url)}: ${error.message}`);
  }
  if (!response.ok) {
    throw new InvalidInputError(`cannot fetch image ${describe(url)}: HTTP ${response.status}`);
  }
  const mimeType = (response.headers.get('content-type') || '').split(';')[0];
  const doc = await image(new Uint8Array(await response.arrayBuffer()), mimeType, context);
  doc.uri = url;
  return doc;
}

async function image(source, mimeType, context) {
  let bytes;
  if (isBlob(source)) bytes = new Uint8Array(await source.arrayBuffer());
  else if (source instanceof ArrayBuffer) bytes = new Uint8Array(source);
  else bytes = new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  if (!bytes.length) throw new InvalidInputError('image is empty (0 bytes)');
  let type = mimeType || sniffMime(bytes);
  if (context.imageMaxSide) {
    const smaller = await shrinkImage(bytes, type, context.imageMaxSide);
    if (smaller) [bytes, type] = [smaller.bytes, smaller.mimeType];
  }
  return { blob: bytes, mimeType: type };
}

/** `data:[<mime>][;base64],<payload>` -> [mime type, bytes] */
export function decodeDataUri(uri) {
  const comma = uri.indexOf(',');
  if (comma < 0) throw new InvalidInputError(`data URI ${describe(uri)} has no comma`);
  const params = uri.slice(5, comma).split(';');
  const payload = uri.slice(comma + 1);
  let bytes;
  try {
    if (params.slice(1).some((p) => p.trim().toLowerCase() === 'base64')) {
      bytes = fromBase64(decodeURIComponent(payload));
    } else {
      bytes = new TextEncoder().encode(decodeURIComponent(payload));
    }
  } catch {
    throw new InvalidInputError(`data URI ${describe(uri)} is not valid base64`);
  }
  if (!bytes.length) throw new InvalidInputError(`data URI ${describe(uri)} is empty`);
  return [params[0].trim() || 'application/octet-stream', bytes];
}

const MAGIC = [
  [[0x89, 0x50, 0x4e, 0x47], 'image/png'],
  [[0xff, 0xd8, 0xff], 'image/jpeg'],
  [[0x47, 0x49, 0x46, 0x38], 'image/gif'],
  [[0x42, 0x4d], 'image/bmp'],
];

export function sniffMime(bytes) {
  for (const [magic, mime] of MAGIC) {
    if (magic.every((byte, i) => bytes[i] === byte)) return mime;
  }
  const riff = String.fromCharCode(...bytes.subarray(0, 4), ...bytes.subarray(8, 12));
  return riff === 'RIFFWEBP' ? 'image/webp' : '';
}

/** A short description of an input for messages. */
export function describe(value) {
  if (typeof value === 'string') {
    return JSON.stringify(value.length <= 80 ? value : `${value.slice(0, 77)}...`);
  }
  return value?.constructor?.name || typeof value;
}
