// Search panel: images are embedded once (batches stream in, so search works while the
// rest is still on its way), then each query is embedded as you type and the images are
// sorted by cosine similarity in the page. A new keystroke aborts the previous query.

import { cosine } from '../clipserve.js';
import { el, explain, isAbort, setStatus } from './dom.js';
import { acceptChosen, acceptDrops, displayName } from './files.js';

const SHOWN = 60;
const TYPING_PAUSE_MS = 150;
const RESORT_MS = 250; // while images stream in, the results are re-sorted at most this often

export function setupSearch({ currentClient, onConnectionError }) {
  const progress = document.getElementById('index-progress');
  const count = document.getElementById('index-count');
  const stop = document.getElementById('index-stop');
  const queryBox = document.getElementById('query');
  const status = document.getElementById('search-status');
  const results = document.getElementById('search-results');
  const images = []; // {file, name, embedding, failed, url}
  const seen = new Set();
  let indexing = null; // AbortController while embedding
  let querying = null;
  let query = null; // {text, vector}
  let typingTimer = 0;
  let resortTimer = 0;

  function add(files) {
    for (const file of files) {
      const key = `${displayName(file)}|${file.size}|${file.lastModified}`;
      if (seen.has(key)) continue;
      seen.add(key);
      images.push({ file, name: displayName(file), embedding: null, failed: null, url: null });
    }
    showProgress();
    if (!indexing) embedPending();
  }

  async function embedPending() {
    const client = currentClient();
    if (!client) return;
    const controller = new AbortController();
    indexing = controller;
    stop.disabled = false;
    try {
      for (;;) {
        const pending = images.filter((image) => !image.embedding && !image.failed);
        if (!pending.length) break;
        await client.encode(
          pending.map((image) => image.file),
          {
            signal: controller.signal,
            onBatch: ({ start, results: rows, failures }) => {
              rows.forEach((row, k) => (pending[start + k].embedding = row));
              for (const f of failures) pending[f.index].failed = f.reason;
              showProgress();
              if (query && !resortTimer) {
                resortTimer = setTimeout(() => {
                  resortTimer = 0;
                  if (query) render();
                }, RESORT_MS);
              }
            },
          },
        );
      }
    } catch (error) {
      if (!isAbort(error)) onConnectionError(error);
      count.textContent = `${countText()}. ${explain(error)}`;
    } finally {
      indexing = null;
      stop.disabled = true;
    }
  }

  function countText() {
    const embedded = images.filter((image) => image.embedding).length;
    const failed = images.filter((image) => image.failed).length;
    const unread = failed ? `, ${failed} could not be read` : '';
    return `${embedded} of ${images.length} images embedded${unread}`;
  }

  function showProgress() {
    const answered = images.filter((image) => image.embedding || image.failed).length;
    progress.max = Math.max(1, images.length);
    progress.value = answered;
    count.textContent = images.length ? countText() : 'No images yet';
  }

  async function search() {
    const text = queryBox.value.trim();
    querying?.abort();
    if (!text) {
      query = null;
      results.replaceChildren();
      setStatus(status, '');
      return;
    }
    const client = currentClient();
    if (!client) return;
    const controller = new AbortController();
    querying = controller;
    try {
      const [vector] = await client.encode([{ text }], { signal: controller.signal });
      query = { text, vector };
      render();
    } catch (error) {
      if (isAbort(error)) return; // a newer query took over
      setStatus(status, explain(error), 'error');
      onConnectionError(error);
    } finally {
      if (querying === controller) querying = null;
    }
  }

  function render() {
    const ranked = images
      .filter((image) => image.embedding)
      .map((image) => ({ image, score: cosine(query.vector, image.embedding) }))
      .sort((a, b) => b.score - a.score);
    results.replaceChildren(
      ...ranked.slice(0, SHOWN).map(({ image, score }, i) => tile(image, score, i)),
    );
    if (!ranked.length) {
      setStatus(
        status,
        images.length ? 'Waiting for the images to be embedded…' : 'Add images to search them.',
      );
      return;
    }
    const best = ranked[0];
    const more = ranked.length > SHOWN ? ` (the first ${SHOWN} shown)` : '';
    setStatus(
      status,
      `${ranked.length} images sorted for “${query.text}”${more}. Best: ${best.image.name}.`,
      'ok',
    );
  }

  function tile(image, score, position) {
    image.url ??= URL.createObjectURL(image.file);
    return el(
      'li',
      { dataset: { image: image.name, score: score.toFixed(4) } },
      el(
        'figure',
        {},
        el('img', { src: image.url, alt: image.name, loading: 'lazy', decoding: 'async' }),
        el(
          'figcaption',
          {},
          el('span', { class: 'rank' }, `${position + 1}.`),
          ` ${image.name} `,
          el('span', { class: 'score' }, score.toFixed(3)),
        ),
      ),
    );
  }

  function resume() {
    if (!indexing && images.some((image) => !image.embedding && !image.failed)) embedPending();
  }

  acceptChosen(document.getElementById('search-files'), add);
  acceptChosen(document.getElementById('search-folder'), add);
  acceptDrops(document.getElementById('search-drop'), add);
  stop.addEventListener('click', () => indexing?.abort());
  queryBox.addEventListener('input', () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(search, TYPING_PAUSE_MS);
  });
  queryBox.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      clearTimeout(typingTimer);
      search();
    }
  });
  return { resume };
}
