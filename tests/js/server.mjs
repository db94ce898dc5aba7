// A real clipserve server for the clipserve.js tests: `python -m clipserve serve` with the
// hash model on loopback, ephemeral port, stopped by PID when the test file ends.
// Python: $CLIPSERVE_PYTHON, else the repository's .venv, else python3.

import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const VENV_PYTHON = join(REPO, '.venv', 'bin', 'python');
export const PYTHON =
  process.env.CLIPSERVE_PYTHON || (existsSync(VENV_PYTHON) ? VENV_PYTHON : 'python3');
const START_TIMEOUT_MS = 120_000; // a failsafe: the wait itself is on the port file appearing

/**
 * Starts `clipserve serve`; resolves once it has written its port file.
 * @param {{token?: string, yaml?: string, args?: string[]}} [options]
 */
export async function startServer(options = {}) {
  const folder = mkdtempSync(join(tmpdir(), 'clipserve-js-'));
  const portFile = join(folder, 'ports.json');
  const args = [
    '-m',
    'clipserve',
    'serve',
    '--model',
    'hash',
    '--host',
    '127.0.0.1',
    '--http-port',
    '0',
    '--protocols',
    'http,websocket',
    '--port-file',
    portFile,
    '--log-level',
    'warning',
    '--shutdown-grace',
    '1',
    ...(options.args || []),
  ];
  if (options.yaml) {
    writeFileSync(join(folder, 'config.yaml'), options.yaml);
    args.push('--config', join(folder, 'config.yaml'));
  }
  const env = { ...process.env, CLIPSERVE_AUTH_TOKEN: options.token || '' };
  const child = spawn(PYTHON, args, { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const ports = await new Promise((resolve, reject) => {
    const watcher = watch(folder, () => check());
    const failsafe = setTimeout(
      () => finish(new Error(`no port file within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
    const onExit = (code) => finish(new Error(`clipserve exited with code ${code}: ${stderr}`));
    child.once('exit', onExit);
    function finish(error, value) {
      watcher.close();
      clearTimeout(failsafe);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve(value);
    }
    function check() {
      if (!existsSync(portFile)) return; // written atomically: present means complete
      finish(null, JSON.parse(readFileSync(portFile, 'utf8')));
    }
    check();
  });
  const http = `http://127.0.0.1:${ports.http}`;
  return {
    http,
    ws: `ws://127.0.0.1:${ports.http}`,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(folder, { recursive: true, force: true });
    },
  };
}

/**
 * Embeddings from the Python client for the same inputs (texts, and images as bytes).
 * @param {string} url
 * @param {Array<string | Uint8Array>} inputs
 * @returns {Promise<number[][]>}
 */
export function pythonEmbeddings(url, inputs) {
  const script = `
import base64, json, sys
from docarray import Document
from clipserve import Client
items = json.load(sys.stdin)
docs = [Document(text=i["text"]) if "text" in i else Document(blob=base64.b64decode(i["blob"]))
        for i in items]
with Client(sys.argv[1]) as client:
    result = client.encode(docs)
print(json.dumps([d.embedding.tolist() for d in result]))
`;
  const items = inputs.map((x) =>
    typeof x === 'string' ? { text: x } : { blob: Buffer.from(x).toString('base64') },
  );
  return new Promise((resolve, reject) => {
    const child = execFile(PYTHON, ['-c', script, url], { cwd: REPO }, (error, stdout, stderr) => {
      if (error) reject(new Error(`python client failed: ${stderr || error.message}`));
      else resolve(JSON.parse(stdout));
    });
    child.stdin.end(JSON.stringify(items));
  });
}

/** A fetch that counts requests by path and how many are open at once. */
export function countingFetch() {
  const counts = { posts: 0, open: 0, maxOpen: 0 };
  const wrapped = async (url, init = {}) => {
    if (init.method !== 'POST') return fetch(url, init);
    counts.posts += 1;
    counts.open += 1;
    counts.maxOpen = Math.max(counts.maxOpen, counts.open);
    try {
      return await fetch(url, init);
    } finally {
      counts.open -= 1;
    }
  };
  return { fetch: wrapped, counts };
}

/** A WebSocket class that counts the binary request frames sent. */
export function countingWebSocket() {
  const counts = { frames: 0, connections: 0 };
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      counts.connections += 1;
    }
    send(data) {
      if (typeof data !== 'string' && data.byteLength > 1) counts.frames += 1;
      super.send(data);
    }
  }
  return { WebSocket: Counting, counts };
}
