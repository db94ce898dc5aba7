// Small DOM helpers and the plain-words version of every error the page can meet.

import {
  AuthenticationError,
  ClientTimeoutError,
  InputRefusedError,
  InvalidInputError,
  OverloadedError,
  PartialFailureError,
  RemoteError,
  ServerUnavailableError,
} from '../clipserve.js';

/** `el('li', {class: 'x', dataset: {k: 'v'}}, 'text', child)` */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'style') {
      for (const [name, v] of Object.entries(value)) node.style.setProperty(name, v);
    } else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

export function setStatus(node, text, kind = 'info') {
  node.textContent = text;
  node.dataset.kind = kind;
}

export function isAbort(error) {
  return error?.name === 'AbortError';
}

/** What went wrong, for a person. */
export function explain(error) {
  if (isAbort(error)) return 'Stopped.';
  if (error instanceof AuthenticationError) {
    return 'The server refused the token. Check it and connect again.';
  }
  if (error instanceof ServerUnavailableError) {
    return 'Cannot reach the server: it may have stopped, or the network is down.';
  }
  if (error instanceof OverloadedError) return 'The server is busy. Try again in a moment.';
  if (error instanceof ClientTimeoutError) return 'The server did not answer in time.';
  if (error instanceof InputRefusedError) return `The server refused this: ${reasonOf(error)}`;
  if (error instanceof InvalidInputError) return `The server cannot use this: ${reasonOf(error)}`;
  if (error instanceof PartialFailureError || error instanceof RemoteError) {
    const n = error.failures.length;
    return `${n} ${n === 1 ? 'image' : 'images'} could not be read: ${error.failures
      .slice(0, 3)
      .map((f) => `${nameOf(f.input)} (${f.reason})`)
      .join('; ')}${n > 3 ? '; …' : ''}`;
  }
  return `Something went wrong: ${error?.message || error}`;
}

/** The server's reason without the URL prefix the client adds. */
function reasonOf(error) {
  return error.message.replace(/^[a-z]+s?:\/\/[^ ]+: (HTTP \d+: )?/, '');
}

export function nameOf(input) {
  if (typeof input === 'string') return `“${input}”`;
  return input?.name || input?.blob?.name || 'an image';
}

export function formatPercent(value) {
  return `${(value * 100).toFixed(value >= 0.995 || value < 0.0995 ? 1 : 0)}%`;
}
