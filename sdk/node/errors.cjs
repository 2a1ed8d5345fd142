'use strict';
// Errors that mirror the API's `code`s, and the rate-limit headers they may carry.

class TilemoreError extends Error {
  constructor(message, { code = 'error', status = undefined, requestId = undefined } = {}) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
    this.status = status;
    this.requestId = requestId; // the x-request-id the service sent: quote it when asking for help
  }
}
class InputError extends TilemoreError {}
class UnsupportedFormatError extends TilemoreError {}
class AuthenticationError extends TilemoreError {}
class PermissionDeniedError extends TilemoreError {}
class NotFoundError extends TilemoreError {}
class InsufficientCreditsError extends TilemoreError {}
class InvalidRequestError extends TilemoreError {}
class ConflictError extends TilemoreError {}
class ResultExpiredError extends TilemoreError {}
class ServerError extends TilemoreError {}
class ConnectionFailed extends TilemoreError {}
class TaskCanceledError extends TilemoreError {}
class WaitTimeout extends TilemoreError {}
class TaskFailedError extends TilemoreError {
  constructor(message, { code, threadId }) {
    super(message, { code });
    this.threadId = threadId;
  }
}
class RateLimitError extends TilemoreError {
  constructor(message, { code = 'rate_limited', requestId, retryAfter, rateLimit } = {}) {
    super(message, { code, status: 429, requestId });
    this.retryAfter = retryAfter; // seconds the service asked to wait, or undefined
    this.rateLimit = rateLimit;
  }
}
class WebhookSignatureError extends TilemoreError {}

const BY_STATUS = {
  400: InvalidRequestError, 401: AuthenticationError, 402: InsufficientCreditsError,
  403: PermissionDeniedError, 404: NotFoundError, 409: ConflictError, 410: ResultExpiredError,
  413: InvalidRequestError, 415: InvalidRequestError, 422: InvalidRequestError,
};

// The rate-limit headers of the IETF draft, in each form its versions used:
// `RateLimit: "default";r=0;t=3` (drafts >= 8), `RateLimit: limit=10, remaining=0, reset=3`
// (draft 7), `RateLimit-Limit/-Remaining/-Reset` (earlier); plus Retry-After (seconds).
// Bounded: a broken header makes the client wait at most MAX_WAIT seconds.
const MAX_WAIT = 300;
const NUMBER = /^\d{1,12}(\.\d{1,6})?$/;
const PARAM = /(?:^|[;,\s])(r|t|limit|remaining|reset)\s*=\s*(\d{1,12}(?:\.\d{1,6})?)/g;

function number(text) {
  if (text === null || text === undefined) return undefined;
  const t = String(text).trim();
  return NUMBER.test(t) ? Number(t) : undefined;
}

function parseRateLimit(headers) {
  const get = (name) => (headers && typeof headers.get === 'function' ? headers.get(name) : undefined) ?? undefined;
  const flat = {}; // draft 7's keys, each once
  const states = []; // drafts >= 8: [r, t] per policy
  for (const item of (get('ratelimit') || '').slice(0, 1024).split(',')) {
    const found = {};
    for (const [, key, value] of item.matchAll(PARAM)) found[key] ??= Number(value);
    if (found.r !== undefined) states.push([found.r, found.t]);
    for (const key of ['limit', 'remaining', 'reset']) if (found[key] !== undefined) flat[key] ??= found[key];
  }
  let remaining = flat.remaining ?? number(get('ratelimit-remaining'));
  let reset = flat.reset ?? number(get('ratelimit-reset'));
  if (states.length) { // several policies (a domain's, a sub-account's): the tightest counts
    remaining = Math.min(...states.map(([r]) => r));
    const resets = states.filter(([r, t]) => r === remaining && t !== undefined).map(([, t]) => t);
    reset = resets.length ? Math.max(...resets) : undefined;
  }
  const policy = get('ratelimit-policy');
  const quotas = [...(policy || '').slice(0, 1024).matchAll(/(?:^|;)\s*q=(\d{1,12})/g)].map((m) => Number(m[1]));
  const limit = flat.limit ?? (quotas.length ? Math.min(...quotas) : undefined) ?? number(get('ratelimit-limit'))
    ?? (policy ? number(policy.split(';')[0]) : undefined);
  return { limit, remaining, reset, retryAfter: number(get('retry-after')), policy: policy ?? undefined };
}

// Seconds to wait before the next request, or undefined when the headers say nothing.
function waitSeconds(limit) {
  if (limit.retryAfter !== undefined) return Math.min(limit.retryAfter, MAX_WAIT);
  if (limit.remaining !== undefined && limit.remaining <= 0 && limit.reset !== undefined) {
    return Math.min(limit.reset, MAX_WAIT);
  }
  return undefined;
}

function errorFor(status, body, headers) {
  const err = body && typeof body === 'object' && body.error ? body.error : {};
  const requestId = (headers && typeof headers.get === 'function' && headers.get('x-request-id')) || undefined;
  const message = err.message || `HTTP ${status}`;
  const code = err.code || `http_${status}`;
  if (status === 429) {
    const rateLimit = parseRateLimit(headers);
    return new RateLimitError(message, { code, requestId, retryAfter: waitSeconds(rateLimit), rateLimit });
  }
  const Cls = BY_STATUS[status] || (status >= 500 ? ServerError : TilemoreError);
  return new Cls(message, { code, status, requestId });
}

module.exports = {
  TilemoreError, InputError, UnsupportedFormatError, AuthenticationError, PermissionDeniedError,
  NotFoundError, InsufficientCreditsError, InvalidRequestError, ConflictError, ResultExpiredError,
  ServerError, ConnectionFailed, TaskCanceledError, TaskFailedError, WaitTimeout,
  RateLimitError, WebhookSignatureError, errorFor, parseRateLimit, waitSeconds,
};
