// clipserve.js: a dependency-free JavaScript client for clipserve (and CLIP-as-service
// servers), for browsers and Node >= 20. Served by clipserve at /static/clipserve.js;
// types in clipserve.d.ts beside it.
//
//   import { Client } from '/static/clipserve.js';
//   const client = new Client('ws://127.0.0.1:51001', { token });
//   const [cat, photo] = await client.encode(['a photo of a cat', fileFromAnInput]);
//   const [ranked] = await client.rank([{ blob: file, matches: ['a cat', 'a dog'] }]);
//   ranked.matches[0]; // {index, input, clipScore, cosine}, best first

export { Client, DEFAULTS } from './clipserve/client.js';
export {
  AuthenticationError,
  ClientTimeoutError,
  ClipServeError,
  InputRefusedError,
  InvalidInputError,
  OverloadedError,
  PartialFailureError,
  RemoteError,
  ServerUnavailableError,
} from './clipserve/errors.js';
export { canShrinkImages } from './clipserve/images.js';
export { classifyString } from './clipserve/inputs.js';

/** Cosine similarity of two embeddings. */
export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}
