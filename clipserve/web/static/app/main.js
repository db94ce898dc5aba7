// The page: learns what the server needs, connects (asking for a token if one is needed),
// then hands the client to the zero-shot and search panels.

import { connect, modelFacts, serverFacts } from './connection.js';
import { explain, setStatus } from './dom.js';
import { setupSearch } from './search.js';
import { setupZeroShot } from './zeroshot.js';

const status = document.getElementById('status');
const form = document.getElementById('token-form');
const tokenInput = document.getElementById('token');
let session = null; // {client, transport}
let search = null; // the search panel, resumed once connected

function showFact(name, value) {
  document.querySelector(`[data-fact="${name}"]`).textContent = value;
}

/** The connected client, or null (and a message saying what to do). */
export function currentClient() {
  if (!session) setStatus(status, 'Not connected yet: enter the token above first.', 'error');
  return session?.client ?? null;
}

/** Called by the panels when a call fails because of the connection itself. */
function onConnectionError(error) {
  if (error?.name === 'AuthenticationError') {
    session?.client.close();
    session = null;
    form.hidden = false;
    setStatus(status, explain(error), 'error');
    tokenInput.focus();
  }
}

async function start(facts, token) {
  setStatus(status, 'Connecting…');
  try {
    session = await connect(facts, token);
  } catch (error) {
    session = null;
    setStatus(status, explain(error), 'error');
    if (facts.auth_required) {
      form.hidden = false;
      tokenInput.select();
    }
    return;
  }
  form.hidden = true;
  const model = await modelFacts(token).catch(() => null);
  if (model) {
    showFact('model', model.model);
    showFact('dim', String(model.dim));
    showFact('precision', `${model.precision} (${model.backend})`);
  }
  const secure = window.location.protocol === 'https:' ? ', TLS' : '';
  showFact('connection', `${session.transport}${secure}`);
  setStatus(status, `Connected${model ? ` to ${model.model}` : ''}. Add images below.`, 'ok');
  search.resume();
}

async function main() {
  let facts;
  try {
    facts = await serverFacts();
  } catch (error) {
    setStatus(status, `Cannot reach the server: ${error.message}`, 'error');
    return;
  }
  showFact('token', facts.auth_required ? 'needed' : 'not needed');
  const panels = { currentClient, onConnectionError };
  setupZeroShot(panels);
  search = setupSearch(panels);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    start(facts, tokenInput.value.trim());
  });
  if (facts.auth_required) {
    form.hidden = false;
    setStatus(status, 'This server needs a token.');
    tokenInput.focus();
  } else {
    await start(facts, '');
  }
}

main();
