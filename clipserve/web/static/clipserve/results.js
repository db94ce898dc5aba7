// Putting replies back in input order (no I/O), as the Python client's core.py does:
// documents are matched by id (an input's position; match j of a rank query is
// `${position}.${j}`), the server's "2 of 8 documents failed: '3': reason; ..." lists
// which inputs failed, and any input answered without an embedding failed too.

import { STATUS_ERROR } from './messages.js';

const FAILED_DOC = /'((?:[^'\\]|\\.)*)': (.*?)(?=; '|; \.\.\. and \d+ more$|$)/g;

/** `"2 of 8 documents failed: 'a': reason; 'b': reason"` -> Map(id -> reason) */
export function parseFailureDescription(description) {
  const found = new Map();
  const at = description.indexOf(' failed: ');
  if (at < 0 || !description.slice(0, at).includes(' of ')) return found;
  for (const match of description.slice(at + 9).matchAll(FAILED_DOC)) {
    found.set(match[1].replace(/\\(.)/g, '$1'), match[2]);
  }
  return found;
}

/** An ERROR reply that refuses the whole request (rather than some of its documents). */
export function isRequestLevel(reply) {
  if (reply.status.code !== STATUS_ERROR) return false;
  const answered = reply.docs.some((doc) => doc.embedding || doc.matches.length);
  return !answered && parseFailureDescription(reply.status.description).size === 0;
}

/**
 * One batch's outcome: `values[k]` is input k's result (Float32Array for encode, a rank
 * result for rank) or null, and `failures` lists the inputs that failed.
 * @param {{start: number, inputs: unknown[]}} batch
 * @param {Map<number, string>} localFailures inputs that failed before sending (by offset)
 * @param {object | null} reply
 */
export function batchOutcome(batch, localFailures, reply, rank) {
  const values = new Array(batch.inputs.length).fill(null);
  const reasons = new Map(localFailures);
  if (reply) {
    const listed = parseFailureDescription(reply.status.description);
    const failed = reply.status.code === STATUS_ERROR;
    for (const doc of reply.docs) {
      const offset = Number(doc.id) - batch.start;
      if (!Number.isInteger(offset) || offset < 0 || offset >= values.length) continue;
      if (reasons.has(offset) || values[offset]) continue; // not sent, or a duplicate
      if (failed && listed.has(doc.id)) reasons.set(offset, listed.get(doc.id));
      else if (rank && doc.matches.length) values[offset] = rankResult(doc, batch.inputs[offset]);
      else if (!rank && doc.embedding) values[offset] = doc.embedding;
    }
    const fallback = failed
      ? reply.status.description || reply.status.name || 'server error'
      : 'the server returned no result for it';
    values.forEach((value, offset) => {
      if (value === null && !reasons.has(offset)) reasons.set(offset, fallback);
    });
  }
  const failures = [...reasons.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([offset, reason]) => ({
      index: batch.start + offset,
      input: batch.inputs[offset],
      reason,
    }));
  return { values, failures };
}

function rankResult(doc, query) {
  const matches = doc.matches.map((match) => {
    const index = Number(match.id.slice(match.id.lastIndexOf('.') + 1));
    return {
      index,
      input: query.matches[index],
      clipScore: match.scores.clip_score ?? NaN,
      cosine: match.scores.clip_score_cosine ?? NaN,
    };
  });
  return { embedding: doc.embedding, matches };
}

/** The message of a call's error: how many failed, and the first few reasons. */
export function describeFailures(failures, total) {
  const listed = failures.slice(0, 5).map((f) => `#${f.index}: ${f.reason}`);
  const more = failures.length > 5 ? `; and ${failures.length - 5} more` : '';
  const of = total === undefined ? '' : ` of ${total}`;
  const noun = total === 1 ? 'input' : 'inputs';
  return `${failures.length}${of} ${noun} failed: ${listed.join('; ')}${more}`;
}
