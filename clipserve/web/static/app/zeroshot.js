// Zero-shot panel: the chosen images, each ranked against the captions by the server's
// rank (one query per image, the captions as its matches), shown per image and as a
// heat map of cosine similarities.

import { PartialFailureError, RemoteError } from '../clipserve.js';
import { el, explain, formatPercent, isAbort, setStatus } from './dom.js';
import { acceptChosen, acceptDrops, displayName } from './files.js';
import { renderHeatmap } from './heatmap.js';

const MAX_IMAGES = 48;

export function setupZeroShot({ currentClient, onConnectionError }) {
  const thumbs = document.getElementById('zeroshot-thumbs');
  const captionsBox = document.getElementById('captions');
  const button = document.getElementById('rank');
  const status = document.getElementById('zeroshot-status');
  const results = document.getElementById('zeroshot-results');
  let images = []; // {file, name, url}
  let running = null; // AbortController of the call in progress

  function choose(files) {
    images.forEach((image) => URL.revokeObjectURL(image.url));
    images = files.slice(0, MAX_IMAGES).map((file) => ({
      file,
      name: displayName(file),
      url: URL.createObjectURL(file),
    }));
    thumbs.replaceChildren(
      ...images.map((image) =>
        el('li', {}, el('img', { src: image.url, alt: image.name, decoding: 'async' })),
      ),
    );
    const dropped = files.length - images.length;
    const note = dropped > 0 ? ` (the first ${MAX_IMAGES}; ${dropped} left out)` : '';
    setStatus(
      status,
      `${images.length} ${images.length === 1 ? 'image' : 'images'} chosen${note}.`,
    );
    if (images.length) rank();
  }

  async function rank() {
    const client = currentClient();
    if (!client) return;
    const captions = [...new Set(captionsBox.value.split('\n').map((c) => c.trim()))].filter(
      Boolean,
    );
    if (!images.length) return setStatus(status, 'Choose at least one image first.', 'error');
    if (captions.length < 2)
      return setStatus(status, 'Write at least two captions, one per line.', 'error');
    running?.abort();
    const controller = new AbortController();
    running = controller;
    button.disabled = true;
    setStatus(status, `Ranking ${captions.length} captions for ${images.length} images…`);
    // {text}: a caption is never taken for an image, even one that looks like a URL
    const matches = captions.map((text) => ({ text }));
    const queries = images.map((image) => ({ blob: image.file, matches }));
    let ranked;
    let failures = [];
    try {
      ranked = await client.rank(queries, {
        signal: controller.signal,
        batchSize: 4,
        onProgress: ({ done, total }) => setStatus(status, `Ranked ${done} of ${total} images…`),
      });
    } catch (error) {
      if (error instanceof PartialFailureError) {
        ranked = error.results;
        failures = error.failures;
      } else {
        if (!isAbort(error) || running === controller) setStatus(status, explain(error), 'error');
        if (!(error instanceof RemoteError)) onConnectionError(error);
        return;
      }
    } finally {
      if (running === controller) {
        running = null;
        button.disabled = false;
      }
    }
    show(ranked, captions);
    const note = failures.length ? ` ${explain(new RemoteError('', failures))}` : '';
    setStatus(
      status,
      `Ranked ${captions.length} captions for ${images.length} images.${note}`,
      failures.length ? 'error' : 'ok',
    );
  }

  function show(ranked, captions) {
    results.replaceChildren(...images.map((image, i) => card(image, ranked[i])));
    renderHeatmap(images, captions, ranked);
  }

  acceptChosen(document.getElementById('zeroshot-files'), choose);
  acceptDrops(document.getElementById('zeroshot-drop'), choose);
  button.addEventListener('click', rank);
  captionsBox.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      rank();
    }
  });
}

function card(image, result) {
  const heading = el('h3', {}, image.name);
  const picture = el('img', { src: image.url, alt: image.name, decoding: 'async' });
  if (!result) {
    return el(
      'li',
      { class: 'card failed', dataset: { image: image.name } },
      picture,
      heading,
      el('p', {}, 'This image could not be read.'),
    );
  }
  const list = el(
    'ol',
    { class: 'ranking', 'aria-label': `Captions for ${image.name}, best first` },
    result.matches.map((match) =>
      el(
        'li',
        { dataset: { caption: match.input.text } },
        el('span', { class: 'caption' }, match.input.text),
        el(
          'span',
          { class: 'bar', 'aria-hidden': 'true' },
          el('span', { style: { width: `${Math.max(1, match.clipScore * 100)}%` } }),
        ),
        el('span', { class: 'score' }, formatPercent(match.clipScore)),
      ),
    ),
  );
  return el('li', { class: 'card', dataset: { image: image.name } }, picture, heading, list);
}
