// The heat map: one row per image, one column per caption, each cell the cosine
// similarity (the colour scaled from the smallest to the largest value shown). A real
// table, so screen readers can walk it by row and column.

import { el } from './dom.js';

export function renderHeatmap(images, captions, ranked) {
  const wrap = document.getElementById('heatmap-wrap');
  const table = document.getElementById('heatmap');
  const rows = images.map((image, i) => {
    const cosines = new Array(captions.length).fill(null);
    for (const match of ranked[i]?.matches ?? []) cosines[match.index] = match.cosine;
    return { image, cosines };
  });
  const values = rows.flatMap((row) => row.cosines).filter((v) => v !== null);
  if (!values.length) {
    wrap.hidden = true;
    return;
  }
  const low = Math.min(...values);
  const span = Math.max(...values) - low || 1;
  const head = el(
    'thead',
    {},
    el(
      'tr',
      {},
      el('th', { scope: 'col' }, 'Image'),
      captions.map((caption) => el('th', { scope: 'col' }, caption)),
    ),
  );
  const body = el(
    'tbody',
    {},
    rows.map(({ image, cosines }) => {
      const best = Math.max(...cosines.filter((v) => v !== null));
      return el(
        'tr',
        {},
        el('th', { scope: 'row' }, el('img', { src: image.url, alt: '' }), image.name),
        cosines.map((value) =>
          value === null ? el('td', {}, '–') : cell(value, (value - low) / span, value === best),
        ),
      );
    }),
  );
  table.replaceChildren(
    el(
      'caption',
      {},
      'Cosine similarity of each image (rows) with each caption (columns); the best caption per image is outlined.',
    ),
    head,
    body,
  );
  wrap.hidden = false;
}

function cell(value, heat, best) {
  const classes = [best && 'best', heat > 0.55 && 'hot'].filter(Boolean).join(' ');
  return el(
    'td',
    { class: classes || undefined, style: { '--heat': heat.toFixed(3) } },
    value.toFixed(2),
  );
}
