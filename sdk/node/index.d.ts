// Typings of tilemore-sdk: the declarations, once. This file types the CommonJS entry
// (`require`, index.cjs); index.d.mts, the ES module entry's (`import`, index.mjs), re-exports
// them. Each entry point has its own declaration file so that `import Tilemore from
// 'tilemore-sdk'` is the class under `module: nodenext` (either format) and `commonjs`.
import { Readable } from 'node:stream';

export type OutputFormat = 'jpeg' | 'png' | 'webp';
export declare const FORMATS: readonly OutputFormat[];

/** Options: camelCase, or the guide's snake_case spelling of each (camelCase wins). */
export interface TilemoreOptions {
  /** default: TILEMORE_API_ENDPOINT */
  apiEndpoint?: string;
  /** default: TILEMORE_API_TOKEN */
  apiToken?: string;
  /** default: TILEMORE_DOMAIN; without one the token is sent as `Bearer` */
  domain?: string;
  debugMode?: boolean;
  metaParts?: string[];
  maxRetries?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  /** the longest a 429's Retry-After / RateLimit reset is waited for (default 60000) */
  maxRateLimitWaitMs?: number;
  pollIntervalMs?: number;
  maxPollIntervalMs?: number;
  /** per attempt: until the answer's headers (and a JSON answer's body) arrive */
  timeoutMs?: number;
  waitTimeoutMs?: number;
  api_endpoint?: string;
  api_token?: string;
  debug_mode?: boolean;
  meta_parts?: string[];
  max_retries?: number;
  backoff_ms?: number;
  max_backoff_ms?: number;
  max_rate_limit_wait_ms?: number;
  poll_interval_ms?: number;
  max_poll_interval_ms?: number;
  timeout_ms?: number;
  wait_timeout_ms?: number;
}

/** `phase` is 'hash', 'upload' or 'download'; `total` is undefined when unknown. */
export type ProgressCallback = (phase: 'hash' | 'upload' | 'download', done: number, total: number | undefined) => void;

export interface CallOptions {
  /** aborts the call (its requests, waits and retries); it rejects with `signal.reason` */
  signal?: AbortSignal;
}

export interface CreateOptions extends CallOptions {
  meta?: Record<string, unknown>;
  pipeline?: string;
  account?: string;
  onProgress?: ProgressCallback;
}

export interface WaitOptions extends CallOptions {
  timeoutMs?: number;
  /** reject on a failed or canceled thread (default true) */
  check?: boolean;
}

export interface DownloadOptions extends CallOptions {
  onProgress?: ProgressCallback;
}

export interface RunOptions extends CreateOptions, WaitOptions {}

export type Input = string | URL | Buffer | Uint8Array | Readable | ReadableStream<Uint8Array>;
export type ThreadStatus = 'processing' | 'done' | 'failed' | 'canceled' | 'needs-file';

export interface ResultLink {
  url: string;
  content_type: string;
  bytes: number;
  sha256: string;
  width: number;
  height: number;
}

export interface Thread {
  thread_id: string;
  status: ThreadStatus;
  pipeline?: string;
  meta_parts?: string[];
  meta?: Record<string, unknown>;
  created_at?: string | null;
  updated_at?: string | null;
  finished_at?: string | null;
  progress?: { done: number; total: number };
  credits_charged?: string | null;
  result?: ResultLink;
  error?: { code: string; message: string };
  [field: string]: unknown;
}

export interface ThreadPage {
  threads: Thread[];
  next_cursor: string | null;
}

export interface ListOptions extends CallOptions {
  status?: ThreadStatus;
  /** meta parts, all of which the threads were submitted under */
  metaPart?: string | string[];
  /** a sub-account's name */
  account?: string;
  /** a Date, ISO 8601 or unix seconds */
  createdSince?: Date | string | number;
  /** 1 to 100 (20) */
  limit?: number;
  /** the previous page's next_cursor */
  cursor?: string;
  meta_part?: string | string[];
  created_since?: Date | string | number;
}

export interface ResultInfo {
  thread_id: string;
  sha256: string;
  content_type: string;
  width: number;
  height: number;
  bytes: number;
  credits_charged?: string | null;
  answer: Thread;
}

export interface ResultFile extends ResultInfo {
  path: string;
}

export interface ResultStream extends Readable {
  tilemore: ResultInfo;
}

export interface Balance {
  account: string;
  balance: string;
  held: string;
  available: string;
}

export interface HistoryDay {
  date: string;
  amount_when_day_started: string;
  transaction_total: string;
  traced_total: string;
  ordered_total: string;
  applied_commitment_bonus: string;
}

export interface Operation {
  seq: number;
  kind: string;
  amount: string;
  balance_after: string;
  thread_id: string | null;
  task_id: string | null;
  operator: string | null;
  megapixels: number | null;
  reference: string | null;
  at: string | number;
}

export interface SubAccount {
  name: string;
  account: string;
  created?: boolean;
  balance?: string;
  held?: string;
  available?: string;
}

export interface SubAccountToken {
  account: string;
  token_id: string;
  /** shown once: keep it */
  token: string;
  authorization: string;
}

export interface Payment {
  payment_id: string;
  amount: string;
  from: string;
  replayed: boolean;
  account: string;
  balance: string;
  held: string;
  available: string;
}

export interface AccountOptions extends CallOptions {
  account?: string;
}

export interface RateLimitInfo {
  limit?: number;
  remaining?: number;
  reset?: number;
  retryAfter?: number;
  policy?: string;
}

export declare class Tilemore {
  constructor(options?: TilemoreOptions);
  create(input: Input, outputFormat: OutputFormat, adjustments: Record<string, unknown>,
         options?: CreateOptions): Promise<Thread>;
  wait(thread: Thread | string, options?: WaitOptions): Promise<Thread>;
  run(input: Input, outputFormat: OutputFormat, adjustments: Record<string, unknown>,
      options: RunOptions & { output: string | URL }): Promise<ResultFile>;
  run(input: Input, outputFormat: OutputFormat, adjustments: Record<string, unknown>,
      options?: RunOptions & { output?: undefined }): Promise<ResultStream>;
  submit(input: Input, outputFormat: OutputFormat, adjustments: Record<string, unknown>,
         options: RunOptions & { output: string | URL }): Promise<ResultFile>;
  submit(input: Input, outputFormat: OutputFormat, adjustments: Record<string, unknown>,
         options?: RunOptions & { output?: undefined }): Promise<ResultStream>;
  download(thread: Thread | string, options: DownloadOptions & { output: string | URL }): Promise<ResultFile>;
  download(thread: Thread | string, options?: DownloadOptions & { output?: undefined }): Promise<ResultStream>;
  get(threadId: string, options?: CallOptions): Promise<Thread>;
  status(threadId: string, options?: CallOptions): Promise<Thread>;
  cancel(thread: Thread | string, options?: CallOptions): Promise<Thread>;
  retry(thread: Thread | string, options?: CallOptions): Promise<Thread>;
  list(options?: ListOptions): Promise<ThreadPage>;
  listAll(options?: Omit<ListOptions, 'cursor'>): AsyncGenerator<Thread, void, undefined>;
  balance(account?: string | AccountOptions, options?: CallOptions): Promise<Balance>;
  history(account?: string | AccountOptions, options?: CallOptions): Promise<HistoryDay[]>;
  operations(options?: CallOptions & { date?: Date | string; account?: string }): Promise<Operation[]>;
  createSubaccount(name: string, options?: CallOptions): Promise<SubAccount>;
  subaccounts(options?: CallOptions): Promise<SubAccount[]>;
  createSubaccountToken(name: string, options?: CallOptions): Promise<SubAccountToken>;
  recordPayment(name: string, paymentId: string, amount: string, options?: CallOptions): Promise<Payment>;
}

export declare class TilemoreError extends Error {
  code: string;
  status?: number;
  /** the x-request-id the service sent with the answer */
  requestId?: string;
}
export declare class InputError extends TilemoreError {}
export declare class UnsupportedFormatError extends TilemoreError {}
export declare class AuthenticationError extends TilemoreError {}
export declare class PermissionDeniedError extends TilemoreError {}
export declare class NotFoundError extends TilemoreError {}
export declare class InsufficientCreditsError extends TilemoreError {}
export declare class InvalidRequestError extends TilemoreError {}
export declare class ConflictError extends TilemoreError {}
export declare class ResultExpiredError extends TilemoreError {}
export declare class RateLimitError extends TilemoreError {
  /** seconds the service asked to wait */
  retryAfter?: number;
  rateLimit: RateLimitInfo;
}
export declare class ServerError extends TilemoreError {}
export declare class ConnectionFailed extends TilemoreError {}
export declare class TaskCanceledError extends TilemoreError {}
export declare class WaitTimeout extends TilemoreError {}
export declare class TaskFailedError extends TilemoreError {
  threadId: string;
}
export declare class WebhookSignatureError extends TilemoreError {}

export interface VerifyOptions {
  /** seconds between the signature's timestamp and now, either way; default 300 */
  tolerance?: number;
  /** now, in unix seconds (tests) */
  now?: number;
}
export declare const webhooks: {
  readonly HEADER: 'Tilemore-Signature';
  readonly DEFAULT_TOLERANCE: number;
  signature(payload: string | Uint8Array, secret: string, timestamp: number): string;
  sign(payload: string | Uint8Array, secret: string | readonly string[], timestamp?: number): string;
  verify(payload: string | Uint8Array, header: string | null | undefined,
         secret: string | readonly string[], options?: VerifyOptions): number;
  constructEvent<T = unknown>(payload: string | Uint8Array, header: string | null | undefined,
                              secret: string | readonly string[], options?: VerifyOptions): T;
};
export default Tilemore;
