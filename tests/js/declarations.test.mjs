// clipserve.d.ts declares everything clipserve.js exports, and nothing it does not.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import * as clipserve from '../../clipserve/web/static/clipserve.js';

const DECLARATIONS = new URL('../../clipserve/web/static/clipserve.d.ts', import.meta.url);

test('every export of clipserve.js is declared in clipserve.d.ts', () => {
  const text = readFileSync(DECLARATIONS, 'utf8');
  const declared = new Set(
    [...text.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]),
  );
  assert.deepEqual([...declared].sort(), Object.keys(clipserve).sort());
});
