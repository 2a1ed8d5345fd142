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
const http = require('node:http');
const https = require('node:https');
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
const LONG_POLL_MS = 20000; // one long poll (GET /threads/{id}?wait=20)
const MAX_ANSWER = 16 * 2 ** 20; // an upload's answer (a thread, as JSON), at most
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

const CHUNK = 1 << 20;

// Memory stays flat however large the input: a file is read into one buffer that is reused
// (never a fresh Buffer per chunk, which only the garbage collector would give back), and an
// upload writes a chunk, waits until the socket has taken it, then reads the next into the
// same buffer.
async function readChunks(handle, size, onChunk) {
  const buffer = Buffer.allocUnsafeSlow(CHUNK);
  let done = 0;
  while (done < size) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(CHUNK, size - done), done);
    if (bytesRead === 0) throw new InputError('the input shrank while it was read', { code: 'input_changed' });
    await onChunk(buffer.subarray(0, bytesRead));
    done += bytesRead;
  }
}

async function hashFile(file, onProgress, signal) {
  const handle = await fsp.open(file, 'r');
  try {
    const { size, isFile } = await handle.stat().then((st) => ({ size: st.size, isFile: st.isFile() }));
    if (!isFile) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' });
    const hash = crypto.createHash('sha256');
    let done = 0;
    await readChunks(handle, size, (chunk) => {
      signal?.throwIfAborted();
      hash.update(chunk);
      done += chunk.length;
      if (onProgress) onProgress('hash', done, size);
    });
    return { sha256: hash.digest('hex'), size };
  } finally {
    await handle.close();
  }
}

/** The input as { sha256, size, path | data, close() }: a path is read twice (hash, upload). */
async function prepare(input, { signal, onProgress } = {}) {
  signal?.throwIfAborted();
  if (Buffer.isBuffer(input) || input instanceof Uint8Array) {
    const data = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    const sha256 = crypto.createHash('sha256').update(data).digest('hex');
    if (onProgress) onProgress('hash', data.length, data.length);
    return { sha256, size: data.length, data, close: async () => {} };
  }
  if (input && (typeof input.pipe === 'function' || typeof input.getReader === 'function')) {
    // Not readable twice: spooled to a private temporary file while it is hashed.
    const stream = typeof input.getReader === 'function' ? Readable.fromWeb(input) : input;
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tilemore-upload-'));
    const spool = path.join(dir, 'input');
    const close = () => fsp.rm(dir, { recursive: true, force: true });
    try {
      const hash = crypto.createHash('sha256');
      let size = 0;
      const counter = new Transform({
        transform(chunk, _encoding, callback) {
          hash.update(chunk);
          size += chunk.length;
          if (onProgress) onProgress('hash', size, undefined);
          callback(null, chunk);
        },
      });
      await pipeline(stream, counter, fs.createWriteStream(spool), { signal });
      return { sha256: hash.digest('hex'), size, path: spool, close };
    } catch (e) {
      await close();
      throw signal?.aborted ? signal.reason : e;
    }
  }
  if (typeof input !== 'string' && !(input instanceof URL)) {
    throw new InputError('input must be a path, a Buffer or a Readable stream', { code: 'input_error' });
  }
  try {
    const { sha256, size } = await hashFile(input, onProgress, signal);
    return { sha256, size, path: input, close: async () => {} };
  } catch (e) {
    if (signal?.aborted) throw signal.reason;
    throw e instanceof TilemoreError ? e : inputError(input, e);
  }
}

/** A multipart body (the envelope first, then the image from its source) of known length. */
function multipart(envelope, source, onProgress) {
  const boundary = `tilemore-${crypto.randomBytes(12).toString('hex')}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="envelope"\r\n`
    + `Content-Type: application/json\r\n\r\n${JSON.stringify(envelope)}\r\n`
    + `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="input"\r\n`
    + 'Content-Type: application/octet-stream\r\n\r\n');
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    length: head.length + source.size + tail.length,
    /** Writes the body to `write(chunk)`, which resolves once the chunk is taken. */
    async writeTo(write) {
      await write(head);
      let sent = 0;
      const progress = async (chunk) => {
        await write(chunk);
        sent += chunk.length;
        if (onProgress) onProgress('upload', sent, source.size);
      };
      if (source.data) {
        await progress(source.data);
      } else {
        const handle = await fsp.open(source.path, 'r');
        try {
          await readChunks(handle, source.size, progress);
        } finally {
          await handle.close();
        }
      }
      await write(tail);
    },
  };
}

/**
 * POST a multipart body with node:http, a chunk at a time, each written only once the previous
 * one left for the socket (fetch would take chunks as fast as they come and hold them).
 * Resolves to a fetch-like { status, headers, body: Buffer }.
 */
function postMultipart(url, headers, form, signal, maxBody) {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(target, {
      method: 'POST', signal,
      headers: { ...headers, 'Content-Type': form.contentType, 'Content-Length': String(form.length) },
    }, (res) => {
      const chunks = [];
      let size = 0;
      res.on('data', (chunk) => {
        if (size < maxBody) chunks.push(chunk.subarray(0, maxBody - size));
        size += chunk.length;
      });
      res.on('end', () => {
        const answer = new Headers();
        for (const [name, value] of Object.entries(res.headers)) {
          for (const v of Array.isArray(value) ? value : [value]) answer.append(name, v);
        }
        resolve({ status: res.statusCode, headers: answer, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    const write = (chunk) => new Promise((done, fail) => {
      if (req.destroyed) { fail(new Error('the connection closed')); return; }
      req.write(chunk, (e) => (e ? fail(e) : done()));
    });
    form.writeTo(write).then(() => req.end(), (e) => { req.destroy(e); reject(e); });
  });
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
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new WaitTimeout(`thread ${answer.thread_id} still processing after ${limit} ms`, { code: 'wait_timeout' });
      }
      // A long poll: the service answers when the thread ends, or after `seconds`. One that
      // came back early and still processing (the service held too many waits) backs off.
      const seconds = Math.min(LONG_POLL_MS, left, this.timeoutMs / 2) / 1000;
      const asked = Date.now();
      answer = await this._call('GET', `${this.endpoint}/threads/${idOf(answer.thread_id)}?wait=${seconds.toFixed(3)}`, { signal });
      if (answer.status === 'processing' && Date.now() - asked < 900 * seconds) {
        await sleep(Math.min(interval, Math.max(0, deadline - Date.now())), signal);
        interval = Math.min(interval * 1.5, this.maxPollMs);
      }
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
      }
      this._debug(`→ ${method} ${url}${json !== undefined ? ` ${body}` : makeBody ? ' (multipart)' : ''}`);
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      try {
        const both = signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal;
        const res = makeBody // a fresh body for every attempt
          ? await postMultipart(url, headers, makeBody(), both, MAX_ANSWER)
          : await fetch(url, { method, headers, body, redirect, signal: both });
        const limit = parseRateLimit(res.headers);
        const wait = waitSeconds(limit);
        // Every request of this client is held back by a 429's wait, or by RateLimit fields
        // that say the window is spent; never by the Retry-After of a 202 (the service's hint
        // for polling that one thread, which held every other thread's calls for a second)
        // nor of a 503 (for the retry below).
        const hold = res.status === 429 ? wait
          : res.status === 503 ? undefined : waitSeconds({ ...limit, retryAfter: undefined });
        if (hold !== undefined) {
          this._notBefore = Date.now() + Math.min(hold * 1000, this.maxRateLimitWaitMs);
        }
        if (stream && res.status >= 200 && res.status < 300) {
          clearTimeout(timer); // a long download may take its time; `signal` still ends it
          this._debug(`← ${res.status} (streamed)`);
          return { status: res.status, headers: res.headers, stream: res.body };
        }
        const buffer = Buffer.isBuffer(res.body) ? res.body
          : await readBody(res, res.status >= 400 ? MAX_ERROR_BODY : Infinity);
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
