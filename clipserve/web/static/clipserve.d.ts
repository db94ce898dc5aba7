// Type declarations for clipserve.js (an ES module with no dependencies).

/** A sentence, or an image: bytes, a Blob/File, a URL, or a data: URI string. Strings are
 * sentences unless they are a data: URI, an http(s) URL, or a file name with an image
 * extension (fetched relative to the page in a browser). */
export type Input = string | Blob | ArrayBuffer | ArrayBufferView | URL | DocumentInput;

/** The explicit form, like a docarray Document: exactly one of text, blob or uri. */
export interface DocumentInput {
  text?: string;
  blob?: Blob | ArrayBuffer | ArrayBufferView;
  /** an http(s) or data: URL of an image */
  uri?: string;
  /** MIME type of `blob` when it is not a Blob that knows its own */
  mimeType?: string;
}

/** A rank() query: the document and the candidates to rank against it. */
export type RankQuery = DocumentInput & { matches: Input[] };

export interface RankedMatch {
  /** position of this candidate in the query's `matches` */
  index: number;
  input: Input;
  /** softmax over the query's candidates of 100 x cosine (CLIP's zero-shot probability) */
  clipScore: number;
  cosine: number;
}

export interface RankResult {
  embedding: Float32Array | null;
  /** best first */
  matches: RankedMatch[];
}

export interface Failure {
  /** position of the input in the call's inputs */
  index: number;
  input: unknown;
  reason: string;
}

export interface Progress {
  /** inputs answered so far (failed ones included) */
  done: number;
  failed: number;
  /** undefined when the inputs are an iterable of unknown length */
  total?: number;
}

export interface BatchResult<T> {
  /** position of the batch's first input */
  start: number;
  inputs: unknown[];
  /** one per input of the batch; null where it failed */
  results: Array<T | null>;
  failures: Failure[];
}

export interface ClientOptions {
  /** the server's token: sent in the Authorization header, or in the WebSocket's first frame */
  token?: string;
  /** inputs per request (default 32) */
  batchSize?: number;
  /** requests prepared-or-in-flight at once per call (default 4) */
  prefetch?: number;
  /** milliseconds to wait for one reply; 0 for no limit (default 300000) */
  timeout?: number;
  /** retries of a request after a transient error: unreachable, timeout, overloaded (default 0) */
  retries?: number;
  /** milliseconds before the first retry, doubling after each (default 500) */
  retryBackoff?: number;
  /** HTTP only: protobuf bodies when the server is clipserve ('auto', default), or force one */
  httpFormat?: 'auto' | 'json' | 'protobuf';
  /** shrink images whose longer side exceeds this many pixels before sending (browsers only) */
  imageMaxSide?: number;
  /** the fetch to use (default: globalThis.fetch) */
  fetch?: typeof fetch;
  /** the WebSocket class to use (default: globalThis.WebSocket; in Node 20, e.g. the ws package) */
  WebSocket?: typeof WebSocket;
}

export interface CallOptions<T = Float32Array> {
  batchSize?: number;
  prefetch?: number;
  /** sent to the server with every request (drop_image_content: true is added) */
  parameters?: Record<string, unknown>;
  /** aborts the call: nothing more is sent, and the promise rejects with signal.reason */
  signal?: AbortSignal;
  /** after each answered batch */
  onProgress?: (progress: Progress) => void;
  /** take each batch's results as they come; then the call keeps nothing, resolves to
   * undefined, and reports failures here instead of throwing PartialFailureError */
  onBatch?: (batch: BatchResult<T>) => void;
  imageMaxSide?: number;
}

export interface ProfileResult {
  roundtrip: number;
  clientServerNetwork: number;
  server: number;
  gatewayNetwork: number;
  model: number;
}

export declare const DEFAULTS: Readonly<
  Required<
    Pick<
      ClientOptions,
      'batchSize' | 'prefetch' | 'timeout' | 'retries' | 'retryBackoff' | 'httpFormat'
    >
  >
>;

export declare class Client {
  /** http(s)://, ws(s):// or websocket(s)://host:port[/path]; relative URLs resolve
   * against the page in a browser. */
  constructor(url: string | URL, options?: ClientOptions);
  readonly url: string;
  readonly protocol: 'http' | 'websocket';
  /** embeddings in input order */
  encode(
    inputs: Input[] | Iterable<Input> | AsyncIterable<Input>,
    options?: CallOptions<Float32Array>,
  ): Promise<Float32Array[]>;
  /** each query's matches ranked by CLIP score, best first, in query order */
  rank(
    queries: RankQuery[] | Iterable<RankQuery> | AsyncIterable<RankQuery>,
    options?: CallOptions<RankResult>,
  ): Promise<RankResult[]>;
  /** where the time of one request goes, in milliseconds */
  profile(content?: Input, options?: { signal?: AbortSignal }): Promise<ProfileResult>;
  /** closes the WebSocket once the server has answered what it was sent */
  close(): void;
}

export declare class ClipServeError extends Error {}
/** an input or request is malformed (also: an image URL that cannot be fetched) */
export declare class InvalidInputError extends ClipServeError {}
/** well-formed but not allowed: size limits, too many documents per request */
export declare class InputRefusedError extends InvalidInputError {}
export declare class AuthenticationError extends ClipServeError {}
/** the server's queues are full; retry later (see `retries`) */
export declare class OverloadedError extends ClipServeError {}
export declare class RemoteError extends ClipServeError {
  readonly failures: Failure[];
}
/** some inputs failed; `results` has the others (null where one failed) */
export declare class PartialFailureError<T = Float32Array | RankResult> extends RemoteError {
  readonly results: Array<T | null>;
}
export declare class ServerUnavailableError extends ClipServeError {}
export declare class ClientTimeoutError extends ClipServeError {}

export declare function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number;
export declare function canShrinkImages(): boolean;
export declare function classifyString(text: string): 'text' | 'image' | 'image-url' | 'image-path';
