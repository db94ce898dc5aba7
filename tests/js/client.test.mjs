// clipserve.js against a real clipserve server (hash model): encode, rank and profile over
// HTTP (JSON and protobuf bodies) and WebSocket, the same embeddings as the Python client,
// batching, bounded requests in flight, progress, async iterables and per-batch delivery.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Client, InvalidInputError, cosine } from '../../clipserve/web/static/clipserve.js';
import { countingFetch, countingWebSocket, pythonEmbeddings, startServer } from './server.mjs';

// The first bytes of a PNG, then noise: the hash model embeds image bytes as they are.
const IMAGE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 7, 1, 2, 3]);
const OTHER_IMAGE = Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 9, 9, 9]);

let server;
before(async () => (server = await startServer()));
after(() => server?.stop());

const TRANSPORTS = [
  ['HTTP with JSON bodies', () => new Client(server.http, { httpFormat: 'json' })],
  ['HTTP with protobuf bodies', () => new Client(server.http)],
  ['WebSocket', () => new Client(server.ws)],
];

for (const [name, makeClient] of TRANSPORTS) {
  describe(name, () => {
    test("encode gives the Python client's embeddings, in input order", async () => {
      const client = makeClient();
      const inputs = ['a photo of a cat', IMAGE, 'a dog', new Blob([OTHER_IMAGE])];
      try {
        const embeddings = await client.encode(inputs, { batchSize: 3 });
        const expected = await pythonEmbeddings(server.http, [
          inputs[0],
          IMAGE,
          'a dog',
          OTHER_IMAGE,
        ]);
        assert.equal(embeddings.length, 4);
        embeddings.forEach((row, i) => {
          assert.ok(row instanceof Float32Array);
          assert.equal(row.length, 512);
          assert.ok(cosine(row, expected[i]) > 0.999999, `input ${i} differs`);
          row.forEach((x, k) => assert.ok(Math.abs(x - expected[i][k]) < 1e-6));
        });
        const dataUri = `data:image/png;base64,${Buffer.from(IMAGE).toString('base64')}`;
        const [fromUri] = await client.encode([dataUri]);
        assert.deepEqual(fromUri, embeddings[1]);
      } finally {
        client.close();
      }
    });

    test("rank orders each query's matches, best first, with CLIP scores", async () => {
      const client = makeClient();
      try {
        const [byText, byImage] = await client.rank([
          { text: 'a cat', matches: ['a dog', 'a cat', 'a bird'] },
          { blob: IMAGE, matches: ['some words', OTHER_IMAGE, { blob: IMAGE }] },
        ]);
        assert.equal(byText.matches[0].index, 1);
        assert.equal(byText.matches[0].input, 'a cat');
        assert.ok(Math.abs(byText.matches[0].cosine - 1) < 1e-5);
        assert.equal(byImage.matches[0].index, 2);
        for (const { matches, embedding } of [byText, byImage]) {
          assert.equal(embedding.length, 512);
          const cosines = matches.map((m) => m.cosine);
          assert.deepEqual(
            cosines,
            [...cosines].sort((a, b) => b - a),
          );
          const total = matches.reduce((sum, m) => sum + m.clipScore, 0);
          assert.ok(Math.abs(total - 1) < 1e-4, `clip scores sum to ${total}`);
          assert.deepEqual(matches.map((m) => m.index).sort(), [0, 1, 2]);
        }
      } finally {
        client.close();
      }
    });

    test('profile reports where the time went', async () => {
      const client = makeClient();
      try {
        const timing = await client.profile('hello');
        assert.ok(timing.server >= 1, `server ${timing.server} ms`); // routes are >= 1 ms
        assert.ok(timing.roundtrip >= timing.server);
        assert.ok(timing.model <= timing.server);
      } finally {
        client.close();
      }
    });

    test('parameters reach the server: model_name picks the endpoint', async () => {
      const client = makeClient();
      try {
        const [named] = await client.encode(['x'], { parameters: { model_name: 'hash' } });
        const [plain] = await client.encode(['x']);
        assert.deepEqual(named, plain);
        await assert.rejects(
          client.encode(['x'], { parameters: { model_name: 'ViT-B-32' } }),
          (error) => error instanceof InvalidInputError && /not served here/.test(error.message),
        );
      } finally {
        client.close();
      }
    });
  });
}

test('texts are cut into batches, and at most `prefetch` requests are open at once', async () => {
  const { fetch, counts } = countingFetch();
  const client = new Client(server.http, { fetch, batchSize: 2, prefetch: 3 });
  const texts = Array.from({ length: 21 }, (_, i) => `sentence ${i}`);
  const progress = [];
  const embeddings = await client.encode(texts, { onProgress: (p) => progress.push(p) });
  assert.equal(counts.posts, 11); // ceil(21 / 2)
  assert.ok(counts.maxOpen <= 3, `${counts.maxOpen} requests were open at once`);
  assert.equal(progress.length, 11);
  assert.deepEqual(progress.at(-1), { done: 21, failed: 0, total: 21 });
  const done = progress.map((p) => p.done);
  assert.deepEqual(
    done,
    [...done].sort((a, b) => a - b),
  );
  const [again] = await client.encode([texts[20]]);
  assert.deepEqual(embeddings[20], again); // in input order whatever the reply order
});

test('an async iterable is read lazily, and onBatch takes results as they come', async () => {
  const client = new Client(server.ws, { batchSize: 4 });
  try {
    async function* sentences() {
      for (let i = 0; i < 10; i++) yield `line ${i}`;
    }
    const all = await client.encode(sentences());
    assert.equal(all.length, 10);
    const seen = [];
    const outcome = await client.encode(sentences(), {
      onBatch: ({ start, results, failures }) => {
        assert.deepEqual(failures, []);
        results.forEach((row, k) => (seen[start + k] = row));
      },
    });
    assert.equal(outcome, undefined);
    assert.deepEqual(seen, all);
  } finally {
    client.close();
  }
});

test('calls share one WebSocket and run side by side', async () => {
  const { WebSocket, counts } = countingWebSocket();
  const client = new Client(server.ws, { batchSize: 1, WebSocket });
  try {
    const [a, b] = await Promise.all([client.encode(['a', 'b', 'c']), client.encode(['c', 'b'])]);
    assert.deepEqual(a[2], b[0]);
    assert.deepEqual(a[1], b[1]);
    assert.equal(counts.connections, 1);
    assert.equal(counts.frames, 5);
  } finally {
    client.close();
  }
});
