// Finding out what the server runs and connecting to it: /ui/server.json says whether a
// token is needed and which protocols are served (readable before any token), /health
// names the model, and a profile() call proves the token and the transport. WebSocket is
// preferred (binary frames, one connection); HTTP is the fallback, e.g. behind a proxy that
// does not pass WebSocket upgrades.

import { Client, ServerUnavailableError, canShrinkImages } from '../clipserve.js';

/** Images are shrunk in the browser to this many pixels on the longer side before upload:
 * camera photos upload as small JPEGs, and models look at 224-336 px anyway. */
export const IMAGE_MAX_SIDE = 512;
const pageBase = () => new URL('.', window.location.href);

export async function serverFacts() {
  const response = await fetch(new URL('ui/server.json', pageBase()), { cache: 'no-store' });
  if (!response.ok) throw new Error(`the server answered ${response.status} for its facts`);
  return response.json();
}

/** Model facts from /health (with the token when there is one: /health may need it). */
export async function modelFacts(token) {
  const headers = token ? { Authorization: token } : {};
  const response = await fetch(new URL('health', pageBase()), { headers, cache: 'no-store' });
  if (!response.ok) return null;
  return response.json();
}

/**
 * A client that has answered one request, over WebSocket if served and reachable.
 * @returns {Promise<{client: Client, transport: string}>}
 */
export async function connect(facts, token) {
  const options = {
    token: token || undefined,
    batchSize: 16,
    prefetch: 4,
    retries: 2,
    imageMaxSide: canShrinkImages() ? IMAGE_MAX_SIDE : undefined,
  };
  const base = pageBase();
  if (facts.protocols.includes('websocket')) {
    const wsUrl = new URL(base);
    wsUrl.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    const client = new Client(wsUrl, options);
    try {
      await client.profile();
      return { client, transport: 'WebSocket' };
    } catch (error) {
      client.close();
      if (!(error instanceof ServerUnavailableError)) throw error;
    }
  }
  const client = new Client(base, options);
  await client.profile();
  return { client, transport: 'HTTP' };
}
