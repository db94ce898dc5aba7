// One error tree, the same as the Python client's (clipserve/errors.py):
//
//   ClipServeError
//    ├── InvalidInputError          an input or request is malformed
//    │    └── InputRefusedError      well-formed but not allowed (size limits, too many docs)
//    ├── AuthenticationError        missing or wrong token
//    ├── OverloadedError            the server's queues are full; retry later
//    ├── RemoteError                the server reported a failure (.failures)
//    │    └── PartialFailureError   some inputs failed, the others have results (.results)
//    ├── ServerUnavailableError     cannot reach the server, or the connection broke
//    └── ClientTimeoutError         no reply within the timeout
//
// An aborted call rejects with its AbortSignal's reason (a DOMException named AbortError
// unless the caller chose another), as fetch() does.

export class ClipServeError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name; // each subclass is named after itself
  }
}

export class InvalidInputError extends ClipServeError {}

export class InputRefusedError extends InvalidInputError {}

export class AuthenticationError extends ClipServeError {}

export class OverloadedError extends ClipServeError {}

export class RemoteError extends ClipServeError {
  /** @param {Array<{index:number,input:unknown,reason:string}>} [failures] */
  constructor(message, failures = [], options) {
    super(message, options);
    this.failures = failures;
  }
}

export class PartialFailureError extends RemoteError {
  constructor(message, failures, results, options) {
    super(message, failures, options);
    this.results = results;
  }
}

export class ServerUnavailableError extends ClipServeError {}

export class ClientTimeoutError extends ClipServeError {}

/** Errors worth retrying: the server was unreachable, slow, or full. */
export function isTransient(error) {
  return (
    error instanceof ServerUnavailableError ||
    error instanceof ClientTimeoutError ||
    error instanceof OverloadedError
  );
}

// ---- what a server said, translated once per protocol (as client/errors_map.py) ----------

const BY_NAME = {
  OverloadedError,
  AuthenticationError,
  ServerUnavailableError,
  InvalidInputError,
  InputRefusedError,
};

const BY_HTTP_STATUS = {
  400: InvalidInputError,
  401: AuthenticationError,
  403: AuthenticationError,
  408: ClientTimeoutError,
  413: InputRefusedError,
  422: InvalidInputError,
  429: OverloadedError,
  502: ServerUnavailableError,
  503: ServerUnavailableError,
  504: ServerUnavailableError,
};

const BY_WS_CLOSE = {
  1001: ServerUnavailableError, // going away (shutdown)
  1006: ServerUnavailableError, // connection lost, or never opened
  1011: ServerUnavailableError,
  1012: ServerUnavailableError,
  1013: OverloadedError,
  1008: AuthenticationError, // policy violation: missing or wrong token
  4001: AuthenticationError,
  4003: AuthenticationError,
  4029: OverloadedError,
  1003: InvalidInputError,
  1007: InvalidInputError,
  1009: InvalidInputError,
};

/** The error class a reply's `status.exception.name` stands for (RemoteError if unknown). */
export function errorClassForName(name) {
  return BY_NAME[name] || RemoteError;
}

/** An error for a non-2xx HTTP reply; `name` is the server's error type when it sent one. */
export function httpError(status, reason, url, name) {
  let Kind = (name && BY_NAME[name]) || BY_HTTP_STATUS[status];
  if (!Kind) Kind = status > 500 ? ServerUnavailableError : RemoteError;
  return new Kind(`${url}: HTTP ${status}: ${reason || 'no details'}`);
}

/** An error for a WebSocket that closed while requests were waiting. */
export function wsCloseError(code, reason, url) {
  const Kind = BY_WS_CLOSE[code] || RemoteError;
  const why = reason || (code === 1006 ? 'connection failed or was lost' : 'no reason given');
  return new Kind(`${url}: WebSocket closed with code ${code}: ${why}`);
}
