import { Readable } from 'node:stream';

export type OutputFormat = 'jpeg' | 'png' | 'webp';
export declare const FORMATS: readonly OutputFormat[];

export interface TilemoreOptions {
  api_endpoint: string;
  api_token: string;
  domain: string;
  debug_mode?: boolean;
  meta_parts?: string[];
  max_retries?: number;
  backoff_ms?: number;
  max_backoff_ms?: number;
  poll_interval_ms?: number;
  max_poll_interval_ms?: number;
  timeout_ms?: number;
  wait_timeout_ms?: number;
}

export interface SubmitOptions {
  meta?: Record<string, unknown>;
  pipeline?: string;
  account?: string;
}

export interface ResultInfo {
  thread_id: string;
  sha256: string;
  content_type: string;
  width: number;
  height: number;
  bytes: number;
  credits_charged?: string;
  answer: Record<string, unknown>;
}

export interface ResultStream extends Readable {
  tilemore: ResultInfo;
}

export interface BalanceAnswer {
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

export declare class Tilemore {
  constructor(options: TilemoreOptions);
  submit(input: string | URL | Buffer | Uint8Array | Readable, output_format: OutputFormat,
         adjustments: Record<string, unknown>, options?: SubmitOptions): Promise<ResultStream>;
  status(thread_id: string): Promise<Record<string, unknown>>;
  cancel(thread_id: string): Promise<Record<string, unknown>>;
  balance(account?: string): Promise<BalanceAnswer>;
  history(account?: string): Promise<HistoryDay[]>;
}

export declare class TilemoreError extends Error {
  code: string;
  status?: number;
}
export declare class InputError extends TilemoreError {}
export declare class UnsupportedFormatError extends TilemoreError {}
export declare class AuthenticationError extends TilemoreError {}
export declare class PermissionDeniedError extends TilemoreError {}
export declare class NotFoundError extends TilemoreError {}
export declare class InsufficientCreditsError extends TilemoreError {}
export declare class InvalidRequestError extends TilemoreError {}
export declare class ConflictError extends TilemoreError {}
export declare class ServerError extends TilemoreError {}
export declare class ConnectionFailed extends TilemoreError {}
export declare class TaskCanceledError extends TilemoreError {}
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
