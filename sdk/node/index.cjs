'use strict';
// Tilemore's NodeJS SDK: no runtime dependencies (Node >= 20: fetch, streams, AbortSignal).
// It hashes the input in a first streaming pass, asks before it uploads, uploads (streamed
// from disk) only on `needs-file`, polls with backoff, honours Retry-After and the RateLimit
// headers, and retries network failures, 429 and 5xx answers: safe, because the API is
// idempotent on the request's parameters. Every call takes an AbortSignal (`{ signal }`).

const crypto = require('node:crypto');
const fs = require('node:fs');
const fsp = require('node:fs/promises');
const os = require('node:os');
const path = require('node:path');
const { Readable, Transform } = require('node:stream');
const { pipeline } = require('node:stream/promises');
const timers = require('node:timers/promises');

const errors = require('./errors.cjs');
const webhooks = require('./webhooks.cjs');

const {
  TilemoreError, InputError, UnsupportedFormatError, ServerError, ConnectionFailed,
  TaskFailedError, TaskCanceledError, WaitTimeout, errorFor, parseRateLimit, waitSeconds,
} = errors;

const FORMATS = Object.freeze(['jpeg', 'png', 'webp']);
const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_ERROR_BODY = 64 * 1024; // an error answer is read at most this far
// A pause that an abort ends with the signal's own reason (its AbortError or TimeoutError).
async function sleep(ms, signal) {
  try {
    await timers.setTimeout(ms, undefined, { signal });
  } catch (e) {
    throw signal?.aborted ? signal.reason : e;
  }
}

const ENV = { endpoint: 'TILEMORE_API_ENDPOINT', token: 'TILEMORE_API_TOKEN', domain: 'TILEMORE_DOMAIN' };

// camelCase option -> the guide's snake_case spelling (both work; camelCase wins).
const OPTIONS = {
  apiEndpoint: 'api_endpoint', apiToken: 'api_token', domain: 'domain', debugMode: 'debug_mode',
  metaParts: 'meta_parts', maxRetries: 'max_retries', backoffMs: 'backoff_ms',
  maxBackoffMs: 'max_backoff_ms', maxRateLimitWaitMs: 'max_rate_limit_wait_ms',
  pollIntervalMs: 'poll_interval_ms', maxPollIntervalMs: 'max_poll_interval_ms',
  timeoutMs: 'timeout_ms', waitTimeoutMs: 'wait_timeout_ms',
};

function pick(options, camel) {
  if (options[camel] !== undefined) return options[camel];
  return options[OPTIONS[camel]];
}

// -- inputs: hashed in one streaming pass, sent in a second, from disk -------------------------

function inputError(input, e) {
  if (e.code === 'ENOENT') return new InputError(`${input}: no such file`, { code: 'input_not_found' });
  if (e.code === 'EISDIR') return new InputError(`${input} is a folder, not a file`, { code: 'input_unreadable' });
  return new InputError(`${input}: cannot read (${e.code || e.message})`, { code: 'input_unreadable' });
}

async function hashStream(stream, total, onProgress, copyTo) {
  const hash = crypto.createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    hash.update(bytes);
    if (copyTo) {
      if (!copyTo.write(bytes)) await new Promise((resolve) => copyTo.once('drain', resolve));
    }
    size += bytes.length;
    if (onProgress) onProgress('hash', size, total);
  }
  return { sha256: hash.digest('hex'), size };
}

/** The input as { sha256, size, open(): Readable, close() }. */
async function prepare(input, { signal, onProgress } = {}) {
  signal?.throwIfAborted();
  if (Buffer.isBuffer(input) || input instanceof Uint8Array) {
    const data = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    const sha256 = crypto.createHash('sha256').update(data).digest('hex');
    if (onProgress) onProgress('hash', data.length, data.length);
    return { sha256, size: data.length, open: () => Readable.from([data]), close: async () => {} };
  }
  if (input && (typeof input.pipe === 'function' || typeof input.getReader === 'function')) {
    // Not readable twice: spooled to a private temporary file while it is hashed.
    const stream = typeof input.getReader === 'function' ? Readable.fromWeb(input) : input;
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tilemore-upload-'));
    const spool = path.join(dir, 'input');
    const close = () => fsp.rm(dir, { recursive: true, force: true });
    try {
      const out = fs.createWriteStream(spool);
      const done = new Promise((resolve, reject) => { out.on('finish', resolve); out.on('error', reject); });
      const { sha256, size } = await hashStream(stream, undefined, onProgress, out);
      out.end();
      await done;
      signal?.throwIfAborted();
      return { sha256, size, open: () => fs.createReadStream(spool), close };
    } catch (e) {
      await close();
      throw e;
    }
  }
  if (typeof input !== 'string' && !(input instanceof URL)) {
    throw new InputError('input must be a path, a Buffer or a Readable stream', { code: 'input_error' });
  }
  let handle;
  try {
    handle = await fsp.open(input, 'r');
    const { size: total } = await handle.stat();
    const { sha256, size } = await hashStream(
      handle.createReadStream({ start: 0, autoClose: false, signal }), total, onProgress);
    return {
      sha256, size,
      open: () => (size === 0 ? Readable.from([]) : fs.createReadStream(input, { start: 0, end: size - 1 })),
      close: async () => {},
    };
  } catch (e) {
    if (e.name === 'AbortError') throw signal?.reason ?? e;
    throw e instanceof TilemoreError ? e : inputError(input, e);
  } finally {
    await handle?.close();
  }
}

/** A multipart body (the envelope first, then the image streamed from its source) of known length. */
function multipart(envelope, source, onProgress) {
  const boundary = `tilemore-${crypto.randomBytes(12).toString('hex')}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="envelope"\r\n`
    + `Content-Type: application/json\r\n\r\n${JSON.stringify(envelope)}\r\n`
    + `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="input"\r\n`
    + 'Content-Type: application/octet-stream\r\n\r\n');
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  async function* body() {
    yield head;
    let sent = 0;
    for await (const chunk of source.open()) {
      sent += chunk.length;
      if (sent > source.size) throw new InputError('the input grew while it was sent', { code: 'input_changed' });
      if (onProgress) onProgress('upload', sent, source.size);
      yield chunk;
    }
    if (sent !== source.size) throw new InputError('the input shrank while it was sent', { code: 'input_changed' });
    yield tail;
  }
  return {
    body, contentType: `multipart/form-data; boundary=${boundary}`,
    length: head.length + source.size + tail.length,
  };
}

function query(params) {
  const pairs = Object.entries(params).filter(([, v]) => v !== undefined && v !== null)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((item) => [k, item instanceof Date ? item.toISOString() : String(item)]));
  return pairs.length ? `?${new URLSearchParams(pairs)}` : '';
}

const idOf = (thread) => encodeURIComponent(typeof thread === 'string' ? thread : thread.thread_id);

// `history('studio')` as before, or `history({ account: 'studio', signal })`.
const withAccount = (arg, options) => (typeof arg === 'string' ? { ...options, account: arg } : { ...arg, ...options });

class Tilemore {
  /**
   * `new Tilemore({ apiEndpoint, apiToken, domain })` (the guide's `api_endpoint`, `api_token`,
   * `debug_mode`... work too). Endpoint and token default to TILEMORE_API_ENDPOINT and
   * TILEMORE_API_TOKEN; without a domain the token is sent as `Bearer` (it names its domain).
   */
  constructor(options = {}) {
    const endpoint = pick(options, 'apiEndpoint') ?? process.env[ENV.endpoint];
    const token = pick(options, 'apiToken') ?? process.env[ENV.token];
    const domain = pick(options, 'domain') ?? process.env[ENV.domain];
    if (!endpoint || !token) {
      throw new TypeError(`Tilemore needs apiEndpoint and apiToken (or ${ENV.endpoint} and ${ENV.token})`);
    }
    const option = (camel, fallback) => pick(options, camel) ?? fallback;
    this.endpoint = String(endpoint).replace(/\/+$/, '');
    this.auth = { Authorization: domain ? `Token ${token} Domain ${domain}` : `Bearer ${token}` };
    Object.assign(this, {
      debugMode: option('debugMode', false), metaParts: option('metaParts', ['sdk']),
      maxRetries: option('maxRetries', 4), backoffMs: option('backoffMs', 250),
      maxBackoffMs: option('maxBackoffMs', 8000), maxRateLimitWaitMs: option('maxRateLimitWaitMs', 60000),
      pollMs: option('pollIntervalMs', 200), maxPollMs: option('maxPollIntervalMs', 2000),
      timeoutMs: option('timeoutMs', 120000), waitTimeoutMs: option('waitTimeoutMs', 3600000),
    });
    this._notBefore = 0; // Date.now() before which no request is sent (a spent rate-limit window)
  }

  // -- threads -----------------------------------------------------------------------------

  /** Start (or find) the thread for `input` and these parameters; resolves at once to the thread. */
  async create(input, outputFormat, adjustments, options = {}) {
    const { meta = {}, pipeline: pipelineName, account, signal, onProgress } = options;
    if (!FORMATS.includes(outputFormat)) {
      throw new UnsupportedFormatError(`output format '${outputFormat}' is not one of ${FORMATS.join(', ')}`,
        { code: 'unsupported_output_format' });
    }
    const source = await prepare(input, { signal, onProgress });
    try {
      const envelope = { output_format: outputFormat, adjustments: adjustments || {}, meta };
      if (pipelineName !== undefined) envelope.pipeline = pipelineName;
      if (account !== undefined) envelope.account = account;
      const url = `${this.endpoint}/${this.metaParts.join('/')}/submitted/${source.sha256}/`;
      let answer = await this._call('POST', url, { json: envelope, signal });
      if (answer.status === 'needs-file') {
        answer = await this._call('POST', url, { multipart: () => multipart(envelope, source, onProgress), signal });
      }
      return answer;
    } finally {
      await source.close();
    }
  }

  /** Poll until the thread ends; a failed or canceled one rejects unless `check: false`. */
  async wait(thread, { signal, timeoutMs, check = true } = {}) {
    let answer = typeof thread === 'string' ? await this.get(thread, { signal }) : thread;
    const limit = timeoutMs ?? this.waitTimeoutMs;
    const deadline = Date.now() + limit;
    let interval = this.pollMs;
    while (answer.status === 'processing') {
      if (Date.now() >= deadline) {
        throw new WaitTimeout(`thread ${answer.thread_id} still processing after ${limit} ms`, { code: 'wait_timeout' });
      }
      await sleep(Math.min(interval, Math.max(0, deadline - Date.now())), signal);
      interval = Math.min(interval * 1.5, this.maxPollMs);
      answer = await this.get(answer.thread_id, { signal });
    }
    if (check && answer.status === 'failed') {
      const err = answer.error || {};
      throw new TaskFailedError(err.message || 'the thread failed', { code: err.code || 'failed', threadId: answer.thread_id });
    }
    if (check && answer.status === 'canceled') {
      throw new TaskCanceledError(`thread ${answer.thread_id} was canceled`, { code: 'canceled' });
    }
    return answer;
  }

  /**
   * create + wait + download. Resolves to a Readable stream of the result (`result.tilemore`
   * describes it), or, with `output: path`, writes the file (whole or not at all) and resolves
   * to its description. However often it is called with the same input and parameters, the
   * work runs (and is billed) once.
   */
  async run(input, outputFormat, adjustments, options = {}) {
    const thread = await this.create(input, outputFormat, adjustments, options);
    const done = await this.wait(thread, options);
    return this.download(done, options);
  }

  /** The guide's call: the same as `run`. */
  submit(input, outputFormat, adjustments, options = {}) {
    return this.run(input, outputFormat, adjustments, options);
  }

  get(threadId, { signal } = {}) {
    return this._call('GET', `${this.endpoint}/threads/${idOf(threadId)}`, { signal });
  }

  status(threadId, options) { return this.get(threadId, options); }

  cancel(threadId, { signal } = {}) {
    return this._call('POST', `${this.endpoint}/threads/${idOf(threadId)}/cancel`, { signal });
  }

  /** Run a failed, canceled or expired thread again. */
  retry(threadId, { signal } = {}) {
    return this._call('POST', `${this.endpoint}/threads/${idOf(threadId)}/retry`, { signal });
  }

  /**
   * One page of the caller's threads, newest first: `{ threads, next_cursor }`; pass
   * `next_cursor` back as `cursor`. `metaPart`: one or several, all of which the threads were
   * submitted under; `account`: a sub-account's name; `createdSince`: a Date, ISO 8601 or unix seconds.
   */
  list(options = {}) {
    const { status, account, limit, cursor, signal } = options;
    const metaPart = options.metaPart ?? options.meta_part;
    const since = options.createdSince ?? options.created_since;
    const q = query({ status, meta_part: metaPart, account, created_since: since, limit, cursor });
    return this._call('GET', `${this.endpoint}/threads${q}`, { signal });
  }

  /** Every thread `list(options)` finds, page after page. */
  async* listAll(options = {}) {
    let cursor;
    do {
      const page = await this.list({ ...options, cursor });
      yield* page.threads;
      cursor = page.next_cursor;
    } while (cursor);
  }

  /** A done thread's result, streamed (see `run`); its SHA-256 is checked as it arrives. */
  async download(thread, { output, signal, onProgress } = {}) {
    const answer = typeof thread === 'string' || !thread.result ? await this.get(thread.thread_id ?? thread, { signal }) : thread;
    const info = answer.result;
    if (!info) throw new TilemoreError(`thread ${answer.thread_id} has no result (${answer.status})`, { code: 'no_result' });
    let res = await this._send('GET', info.url, { redirect: 'manual', stream: true, signal });
    if (REDIRECTS.has(res.status)) {
      // a presigned link: it carries its own signature, and no credentials may go with it
      res = await this._send('GET', res.headers.get('location'), { auth: false, stream: true, signal });
    }
    if (res.status >= 400) throw errorFor(res.status, parse(res.body), res.headers);
    const total = info.bytes || Number(res.headers.get('content-length')) || undefined;
    const hash = crypto.createHash('sha256');
    let got = 0;
    const check = new Transform({
      transform(chunk, _encoding, callback) {
        hash.update(chunk);
        got += chunk.length;
        if (onProgress) onProgress('download', got, total);
        callback(null, chunk);
      },
      flush(callback) {
        callback(hash.digest('hex') === info.sha256 ? null
          : new ServerError('the downloaded result does not match its hash', { code: 'corrupt' }));
      },
    });
    const description = {
      thread_id: answer.thread_id, sha256: info.sha256, content_type: info.content_type,
      width: info.width, height: info.height, bytes: info.bytes,
      credits_charged: answer.credits_charged, answer,
    };
    const body = Readable.fromWeb(res.stream, { signal });
    if (output !== undefined) {
      const target = String(output instanceof URL ? output.pathname : output);
      const part = path.join(path.dirname(target), `.${path.basename(target)}.part`);
      try {
        await pipeline(body, check, fs.createWriteStream(part), { signal });
        await fsp.rename(part, target); // never half a file at `output`
      } catch (e) {
        await fsp.rm(part, { force: true });
        throw e;
      }
      return { ...description, path: target };
    }
    const stream = body.pipe(check);
    body.on('error', (e) => check.destroy(e));
    stream.tilemore = description;
    return stream;
  }

  // -- billing -----------------------------------------------------------------------------

  balance(account, options) {
    const o = withAccount(account, options);
    return this._call('GET', `${this.endpoint}/billing/balance${query({ account: o.account })}`, o);
  }

  /** The abbreviated history: one row per day for the latest 31 days. */
  async history(account, options) {
    const o = withAccount(account, options);
    return (await this._call('GET', `${this.endpoint}/billing/history${query({ account: o.account })}`, o)).days;
  }

  /** The detailed history: every operation of today (or `date`: yesterday) and its cost. */
  async operations({ date, account, signal } = {}) {
    const day = date instanceof Date ? date.toISOString().slice(0, 10) : date;
    return (await this._call('GET', `${this.endpoint}/billing/operations${query({ date: day, account })}`, { signal })).operations;
  }

  /** Create the sub-account `name` (or find it: the call is idempotent). */
  createSubaccount(name, { signal } = {}) {
    return this._call('POST', `${this.endpoint}/billing/subaccounts`, { json: { name }, signal });
  }

  async subaccounts({ signal } = {}) {
    return (await this._call('GET', `${this.endpoint}/billing/subaccounts`, { signal })).subaccounts;
  }

  /** A new token for the sub-account `name` (its secret is shown only now). */
  createSubaccountToken(name, { signal } = {}) {
    return this._call('POST', `${this.endpoint}/billing/subaccounts/${encodeURIComponent(name)}/tokens`, { signal });
  }

  /** Record a payment the sub-account's owner made: `amount` (a decimal string) moves from the domain, once per id. */
  recordPayment(name, paymentId, amount, { signal } = {}) {
    return this._call('POST', `${this.endpoint}/billing/subaccounts/${encodeURIComponent(name)}/payments`,
      { json: { payment_id: paymentId, amount: String(amount) }, signal });
  }

  // -- machinery ---------------------------------------------------------------------------

  async _call(method, url, options = {}) {
    const res = await this._send(method, url, options);
    const body = parse(res.body);
    if (res.status >= 400) throw errorFor(res.status, body, res.headers);
    return body;
  }

  /**
   * One request, retried. A 2xx answer to a `stream` request comes back unread (`res.stream`);
   * every other answer is read (an error's body bounded).
   */
  async _send(method, url, { json, multipart: makeBody, auth = true, redirect = 'follow', stream = false, signal } = {}) {
    for (let attempt = 0; ; attempt += 1) {
      signal?.throwIfAborted();
      const delay = this._notBefore - Date.now();
      if (delay > 0) {
        this._debug(`... rate limit: waiting ${delay} ms`);
        await sleep(delay, signal);
      }
      const headers = { ...(auth ? this.auth : {}) };
      let body;
      if (json !== undefined) {
        headers['Content-Type'] = 'application/json';
        body = JSON.stringify(json);
      } else if (makeBody) {
        const form = makeBody(); // a fresh body for every attempt
        headers['Content-Type'] = form.contentType;
        headers['Content-Length'] = String(form.length);
        body = form.body();
      }
      this._debug(`→ ${method} ${url}${json !== undefined ? ` ${body}` : makeBody ? ' (multipart)' : ''}`);
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      try {
        const res = await fetch(url, {
          method, headers, body, redirect, duplex: body && typeof body !== 'string' ? 'half' : undefined,
          signal: signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal,
        });
        const limit = parseRateLimit(res.headers);
        const wait = waitSeconds(limit);
        if (wait !== undefined && res.status !== 503) {
          this._notBefore = Date.now() + Math.min(wait * 1000, this.maxRateLimitWaitMs);
        }
        if (stream && res.status >= 200 && res.status < 300) {
          clearTimeout(timer); // a long download may take its time; `signal` still ends it
          this._debug(`← ${res.status} (streamed)`);
          return { status: res.status, headers: res.headers, stream: res.body };
        }
        const buffer = await readBody(res, res.status >= 400 ? MAX_ERROR_BODY : Infinity);
        this._debug(`← ${res.status} ${buffer.subarray(0, 500).toString()}`);
        if (RETRY_STATUSES.has(res.status) && attempt < this.maxRetries) {
          if (res.status !== 429 || wait === undefined) await sleep(this._pause(attempt, res.status, wait), signal);
          continue; // a 429 that said when: waited for at the top
        }
        return { status: res.status, headers: res.headers, body: buffer };
      } catch (e) {
        if (signal?.aborted) throw signal.reason;
        if (e instanceof TilemoreError) throw e; // the input changed under us: no retry
        const why = e.cause ? e.cause.code || e.cause.message : e.message;
        this._debug(`× ${method} ${url}: ${why}`);
        if (attempt >= this.maxRetries) {
          throw new ConnectionFailed(`${method} ${url} failed after ${attempt + 1} attempts: ${why}`, { code: 'connection_failed' });
        }
        await sleep(this._pause(attempt, 0, undefined), signal);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  _pause(attempt, status, wait) {
    if (wait !== undefined) return Math.min(wait * 1000, status === 429 ? this.maxRateLimitWaitMs : this.maxBackoffMs);
    return Math.min(this.maxBackoffMs, this.backoffMs * 2 ** attempt) * (0.5 + Math.random() / 2);
  }

  _debug(message) {
    if (this.debugMode) console.error(`tilemore-sdk ${message}`);
  }
}

async function readBody(res, limit) {
  if (!res.body) return Buffer.alloc(0);
  if (limit === Infinity) return Buffer.from(await res.arrayBuffer());
  const chunks = [];
  let size = 0;
  for await (const chunk of res.body) {
    chunks.push(Buffer.from(chunk).subarray(0, limit - size));
    size += chunk.length;
    if (size >= limit) break;
  }
  return Buffer.concat(chunks);
}

function parse(buffer) {
  if (!buffer) return undefined;
  try { return JSON.parse(buffer.toString()); } catch { return buffer.toString(); }
}

module.exports = {
  Tilemore, FORMATS, webhooks, TilemoreError, InputError, UnsupportedFormatError,
  AuthenticationError: errors.AuthenticationError, PermissionDeniedError: errors.PermissionDeniedError,
  NotFoundError: errors.NotFoundError, InsufficientCreditsError: errors.InsufficientCreditsError,
  InvalidRequestError: errors.InvalidRequestError, ConflictError: errors.ConflictError,
  ResultExpiredError: errors.ResultExpiredError, RateLimitError: errors.RateLimitError,
  ServerError, ConnectionFailed, TaskFailedError, TaskCanceledError, WaitTimeout,
  WebhookSignatureError: errors.WebhookSignatureError,
};
module.exports.default = Tilemore;
// `import Tilemore from 'tilemore-sdk'` compiled to CommonJS reads `.default`: say so.
Object.defineProperty(module.exports, '__esModule', { value: true });
