// One encode() or rank() call: inputs are cut into batches of `batchSize`, each batch is
// prepared (images read, fetched, maybe shrunk) and sent as one request, and at most
// `prefetch` batches are prepared-or-unanswered at once, which bounds memory and the
// server's share of this caller. Replies come back in any order; results are put back in
// input order. Transient errors (unreachable, timeout, overloaded) are retried per batch
// when `retries` > 0. An abort, or any error that fails the call, stops sending at once.

import {
  ClientTimeoutError,
  InvalidInputError,
  PartialFailureError,
  RemoteError,
  errorClassForName,
  isTransient,
} from './errors.js';
import { checkInput, checkQuery, prepareDoc } from './inputs.js';
import { batchOutcome, describeFailures, isRequestLevel } from './results.js';
import { link, sleep } from './signals.js';

/**
 * @param {object} job {transport, url, endpoint, parameters, inputs, rank, batchSize,
 *   prefetch, timeout, retries, retryBackoff, signal, onProgress, onBatch, fetch,
 *   imageMaxSide}
 */
export async function runJob(job) {
  const check = job.rank ? checkQuery : checkInput;
  const { items, total } = plan(job.inputs, check);
  job.signal?.throwIfAborted();
  const control = new AbortController();
  const unlink = link(job.signal, control);
  const state = { error: null, done: 0, failed: 0, values: [], failures: [] };
  const inFlight = new Set();
  const prefix = randomId();
  try {
    let start = 0;
    let index = 0;
    for await (const chunk of batches(items, job.batchSize, check)) {
      while (inFlight.size >= job.prefetch && !control.signal.aborted) {
        await Promise.race(inFlight);
      }
      if (control.signal.aborted) break;
      const batch = { index, start, inputs: chunk, requestId: `${prefix}-${index}` };
      index += 1;
      start += chunk.length;
      const task = runBatch(job, batch, control.signal, state, total)
        .catch((error) => {
          state.error ??= error;
          control.abort(error); // stop the other batches and send nothing more
        })
        .finally(() => inFlight.delete(task));
      inFlight.add(task);
    }
  } catch (error) {
    state.error ??= error; // a bad input in an iterable, or the iterable's own error
    control.abort(error);
  }
  await Promise.all(inFlight);
  unlink();
  if (job.signal?.aborted) throw job.signal.reason;
  if (state.error) throw state.error;
  if (job.onBatch) return undefined;
  if (state.failures.length) {
    const message = `${job.url}: ${describeFailures(state.failures, total ?? state.done)}`;
    if (state.done > state.failures.length) {
      throw new PartialFailureError(message, state.failures, state.values);
    }
    throw new RemoteError(message, state.failures);
  }
  return state.values;
}

async function runBatch(job, batch, signal, state, total) {
  const context = { fetch: job.fetch, signal, imageMaxSide: job.imageMaxSide };
  const prepared = await Promise.allSettled(
    batch.inputs.map((input, k) => prepareDoc(input, String(batch.start + k), context, job.rank)),
  );
  const docs = [];
  const local = new Map();
  prepared.forEach((outcome, offset) => {
    if (outcome.status === 'fulfilled') docs.push(outcome.value);
    else if (outcome.reason instanceof InvalidInputError && !signal.aborted) {
      local.set(offset, outcome.reason.message);
    } else throw outcome.reason;
  });
  const request = {
    requestId: batch.requestId,
    endpoint: job.endpoint,
    parameters: job.parameters,
    docs,
  };
  const reply = docs.length ? await sendWithRetries(job, request, signal) : null;
  const { values, failures } = batchOutcome(batch, local, reply, job.rank);
  signal.throwIfAborted();
  state.done += values.length;
  state.failed += failures.length;
  if (job.onBatch) {
    job.onBatch({ start: batch.start, inputs: batch.inputs, results: values, failures });
  } else {
    values.forEach((value, offset) => (state.values[batch.start + offset] = value));
    state.failures.push(...failures);
    state.failures.sort((a, b) => a.index - b.index);
  }
  job.onProgress?.({ done: state.done, failed: state.failed, total });
}

async function sendWithRetries(job, request, signal) {
  for (let attempt = 1; ; attempt++) {
    try {
      const reply = await sendOnce(job, request, signal);
      if (isRequestLevel(reply)) {
        const { description, name } = reply.status;
        const Kind = errorClassForName(name);
        throw new Kind(`${job.url}: ${description || name || 'request refused'}`);
      }
      return reply;
    } catch (error) {
      if (signal.aborted || !isTransient(error) || attempt > job.retries) throw error;
      await sleep(job.retryBackoff * 2 ** (attempt - 1) * (0.75 + Math.random() / 2), signal);
    }
  }
}

async function sendOnce(job, request, signal) {
  if (!job.timeout) return job.transport.send(request, signal);
  const attempt = new AbortController();
  const unlink = link(signal, attempt);
  const timer = setTimeout(() => {
    const seconds = job.timeout / 1000;
    attempt.abort(new ClientTimeoutError(`${job.url}: no reply within ${seconds} s`));
  }, job.timeout);
  try {
    return await job.transport.send(request, attempt.signal);
  } finally {
    clearTimeout(timer);
    unlink();
  }
}

/** Arrays are checked whole before anything is sent; other iterables as they are read. */
function plan(inputs, check) {
  if (inputs == null || typeof inputs === 'string' || !isIterable(inputs)) {
    throw new TypeError('inputs must be an array or (async) iterable of inputs; wrap one in [ ]');
  }
  if (Array.isArray(inputs)) {
    inputs.forEach(check);
    return { items: inputs, total: inputs.length };
  }
  return { items: inputs, total: undefined };
}

function isIterable(value) {
  return (
    typeof value[Symbol.iterator] === 'function' ||
    typeof value[Symbol.asyncIterator] === 'function'
  );
}

async function* batches(items, size, check) {
  let chunk = [];
  let position = 0;
  for await (const item of items) {
    check(item, position++);
    chunk.push(item);
    if (chunk.length === size) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length) yield chunk;
}

export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
