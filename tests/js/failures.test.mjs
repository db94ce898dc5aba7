// What goes wrong, against real servers (hash model): a token accepted and refused, a bad
// image failing alone, a refused request, an unreachable or stalled server, an aborted
// call that stops sending, and misuse caught before anything is sent.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import {
  AuthenticationError,
  Client,
  ClientTimeoutError,
  InputRefusedError,
  PartialFailureError,
  RemoteError,
  ServerUnavailableError,
} from '../../clipserve/web/static/clipserve.js';
import { countingFetch, countingWebSocket, startServer } from './server.mjs';

const TOKEN = 'correct horse battery staple';
const LIMITS = 'limits: {max_image_bytes: 2048, max_docs_per_request: 8}\n';

let open; // no token, small limits
let guarded; // token required
before(async () => {
  [open, guarded] = await Promise.all([
    startServer({ yaml: LIMITS }),
    startServer({ token: TOKEN }),
  ]);
});
after(() => Promise.all([open?.stop(), guarded?.stop()]));

const urls = (server) => [
  ['HTTP', server.http],
  ['WebSocket', server.ws],
];

describe('auth', () => {
  for (const [name, url] of [
    ['HTTP', () => guarded.http],
    ['WebSocket', () => guarded.ws],
  ]) {
    test(`${name}: the right token is accepted, a wrong or missing one refused`, async () => {
      const right = new Client(url(), { token: TOKEN });
      const wrong = new Client(url(), { token: 'guess' });
      const none = new Client(url());
      try {
        const [row] = await right.encode(['hello']);
        assert.equal(row.length, 512);
        for (const client of [wrong, none]) {
          await assert.rejects(client.encode(['hello']), (error) => {
            assert.ok(error instanceof AuthenticationError, `${error.name}: ${error.message}`);
            assert.match(error.message, /credential|unauthenticated/);
            return true;
          });
        }
        assert.equal((await right.encode(['again'])).length, 1); // still serving
      } finally {
        [right, wrong, none].forEach((c) => c.close());
      }
    });
  }

  test('a token sent to a server that needs none does no harm', async () => {
    for (const [, url] of urls(open)) {
      const client = new Client(url, { token: 'unneeded' });
      assert.equal((await client.encode(['x'])).length, 1);
      client.close();
    }
  });
});

for (const [name, url] of [
  ['HTTP', () => open.http],
  ['WebSocket', () => open.ws],
]) {
  describe(`${name}: per-input failures`, () => {
    test('a bad image fails alone; the good inputs keep their results', async () => {
      const client = new Client(url());
      const tooBig = new Uint8Array(5000).fill(7); // above the server's max_image_bytes
      const inputs = [
        'fine',
        tooBig,
        'data:image/png;base64,@@not base64@@',
        'ok',
        Uint8Array.of(1, 2),
      ];
      try {
        const error = await client.encode(inputs, { batchSize: 2 }).then(
          () => assert.fail('encode should have failed'),
          (e) => e,
        );
        assert.ok(error instanceof PartialFailureError, `${error.name}: ${error.message}`);
        assert.deepEqual(
          error.failures.map((f) => f.index),
          [1, 2],
        );
        assert.equal(error.failures[0].input, tooBig);
        assert.match(error.failures[0].reason, /above the limit/); // said by the server
        assert.match(error.failures[1].reason, /base64/); // found before sending
        assert.match(error.message, /2 of 5 inputs failed/);
        const { results } = error;
        assert.equal(results.length, 5);
        for (const i of [0, 3, 4]) assert.equal(results[i].length, 512);
        assert.equal(results[1], null);
        assert.equal(results[2], null);
        const [fine] = await client.encode(['fine']);
        assert.deepEqual(results[0], fine);
      } finally {
        client.close();
      }
    });

    test('when every input fails, the call fails with each reason', async () => {
      const client = new Client(url());
      try {
        await assert.rejects(client.encode([new Uint8Array(4000)]), (error) => {
          assert.ok(error instanceof RemoteError && !(error instanceof PartialFailureError));
          assert.equal(error.failures.length, 1);
          return true;
        });
      } finally {
        client.close();
      }
    });

    test("a request above the server's limit is refused as a whole", async () => {
      const client = new Client(url(), { batchSize: 10 });
      const texts = Array.from({ length: 10 }, (_, i) => `t${i}`);
      try {
        await assert.rejects(client.encode(texts), (error) => {
          assert.ok(error instanceof InputRefusedError, `${error.name}: ${error.message}`);
          assert.match(error.message, /above the limit of 8/);
          return true;
        });
        assert.equal((await client.encode(texts, { batchSize: 8 })).length, 10);
      } finally {
        client.close();
      }
    });
  });
}

describe('abort', () => {
  const texts = Array.from({ length: 60 }, (_, i) => `sentence ${i}`);

  test("HTTP: an aborted call stops sending and rejects with the signal's reason", async () => {
    const { fetch, counts } = countingFetch();
    const client = new Client(open.http, { fetch, batchSize: 1, prefetch: 2 });
    const controller = new AbortController();
    await assert.rejects(
      client.encode(texts, { signal: controller.signal, onProgress: () => controller.abort() }),
      { name: 'AbortError' },
    );
    assert.ok(counts.posts <= 3, `${counts.posts} requests were sent after the abort`);
    assert.equal((await client.encode(['after'])).length, 1);
  });

  test('WebSocket: an aborted call stops sending; the connection serves the next call', async () => {
    const { WebSocket, counts } = countingWebSocket();
    const client = new Client(open.ws, { WebSocket, batchSize: 1, prefetch: 2 });
    const controller = new AbortController();
    const reason = new Error('user left');
    try {
      await assert.rejects(
        client.encode(texts, {
          signal: controller.signal,
          onProgress: () => controller.abort(reason),
        }),
        (error) => error === reason,
      );
      assert.ok(counts.frames <= 3, `${counts.frames} requests were sent after the abort`);
      assert.equal((await client.encode(['after'])).length, 1);
      assert.equal(counts.connections, 1);
    } finally {
      client.close();
    }
  });

  test('an already aborted signal sends nothing', async () => {
    const { fetch, counts } = countingFetch();
    const client = new Client(open.http, { fetch });
    await assert.rejects(client.encode(['x'], { signal: AbortSignal.abort() }), {
      name: 'AbortError',
    });
    assert.equal(counts.posts, 0);
  });
});

describe('unreachable and stalled servers', () => {
  let stalled; // accepts requests and never answers them
  let posts = 0;
  const waiting = [];
  before(async () => {
    stalled = createServer((request, response) => {
      if (request.method === 'POST') {
        posts += 1;
        waiting.push(response);
      } else response.writeHead(404).end();
    });
    await new Promise((resolve) => stalled.listen(0, '127.0.0.1', resolve));
  });
  after(() => {
    waiting.forEach((response) => response.destroy());
    stalled.closeAllConnections();
    return new Promise((resolve) => stalled.close(resolve));
  });

  test('nothing listening: ServerUnavailableError on both transports', async () => {
    const port = stalled.address().port + 0;
    const gone = await new Promise((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const free = probe.address().port;
        probe.close(() => resolve(free));
      });
    });
    assert.notEqual(gone, port);
    for (const url of [`http://127.0.0.1:${gone}`, `ws://127.0.0.1:${gone}`]) {
      await assert.rejects(new Client(url).encode(['x']), ServerUnavailableError);
    }
  });

  test('no reply within `timeout`: ClientTimeoutError, after the configured retries', async () => {
    const url = `http://127.0.0.1:${stalled.address().port}`;
    const client = new Client(url, { timeout: 200, retries: 1, retryBackoff: 10 });
    await assert.rejects(client.encode(['x']), ClientTimeoutError);
    assert.equal(posts, 2);
  });
});

test('misuse fails at once, before anything is sent', async () => {
  const { fetch, counts } = countingFetch();
  const client = new Client(open.http, { fetch });
  await assert.rejects(client.encode('one string'), TypeError);
  await assert.rejects(client.encode(['fine', 42]), /input #1 is number/);
  await assert.rejects(client.encode([{ title: 'no content' }]), TypeError);
  await assert.rejects(client.rank([{ text: 'query without matches' }]), /matches/);
  await assert.rejects(client.encode(['x'], { batchSize: 0 }), RangeError);
  assert.equal(counts.posts, 0);
  assert.throws(() => new Client('grpc://127.0.0.1:51000'), /gRPC is not available/);
  assert.throws(() => new Client('ftp://127.0.0.1'), /unsupported scheme/);
  assert.throws(() => new Client(open.http, { imageMaxSide: 512 }), /createImageBitmap/);
});
