'use strict';
// Tilemore's NodeJS SDK: no runtime dependencies (Node >= 20: fetch, FormData, Blob, streams).
// It asks before it uploads, uploads only on `needs-file`, polls with backoff (honouring
// Retry-After), and retries network failures and 5xx answers: safe, because the API is
// idempotent on the request's parameters.

const crypto = require('node:crypto');
const fs = require('node:fs/promises');
const { Readable } = require('node:stream');

const FORMATS = Object.freeze(['jpeg', 'png', 'webp']);
const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);

const {
  TilemoreError, InputError, UnsupportedFormatError, AuthenticationError, PermissionDeniedError,
  NotFoundError, InsufficientCreditsError, InvalidRequestError, ConflictError, ServerError,
  ConnectionFailed, TaskFailedError, TaskCanceledError, WebhookSignatureError, errorFor,
} = require('./errors.cjs');
const webhooks = require('./webhooks.cjs');

async function readInput(input) {
  if (Buffer.isBuffer(input)) return input;
  if (input instanceof Uint8Array) return Buffer.from(input);
  if (input && typeof input.pipe === 'function') {
    const chunks = [];
    for await (const chunk of input) chunks.push(Buffer.from(chunk));
    return Buffer.concat(chunks);
  }
  if (typeof input !== 'string' && !(input instanceof URL)) {
    throw new InputError('input must be a path, a Buffer or a Readable stream', { code: 'input_error' });
  }
  try {
    return await fs.readFile(input);
  } catch (e) {
    if (e.code === 'ENOENT') throw new InputError(`${input}: no such file`, { code: 'input_not_found' });
    if (e.code === 'EISDIR') throw new InputError(`${input} is a folder, not a file`, { code: 'input_unreadable' });
    throw new InputError(`${input}: cannot read (${e.code || e.message})`, { code: 'input_unreadable' });
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Tilemore {
  constructor({
    api_endpoint, api_token, domain, debug_mode = false, meta_parts = ['sdk'],
    max_retries = 4, backoff_ms = 250, max_backoff_ms = 8000, poll_interval_ms = 200,
    max_poll_interval_ms = 2000, timeout_ms = 120000, wait_timeout_ms = 3600000,
  } = {}) {
    if (!api_endpoint || !api_token || !domain) {
      throw new TypeError('Tilemore needs api_endpoint, api_token and domain');
    }
    this.endpoint = api_endpoint.replace(/\/+$/, '');
    this.auth = { Authorization: `Token ${api_token} Domain ${domain}` };
    Object.assign(this, {
      debugMode: debug_mode, metaParts: meta_parts, maxRetries: max_retries,
      backoffMs: backoff_ms, maxBackoffMs: max_backoff_ms, pollMs: poll_interval_ms,
      maxPollMs: max_poll_interval_ms, timeoutMs: timeout_ms, waitTimeoutMs: wait_timeout_ms,
    });
  }

  /**
   * Run `input` through the pipeline; resolves to a Readable stream of the result, with
   * `result.tilemore` = { thread_id, sha256, content_type, width, height, credits_charged }.
   * However often it is called with the same input and parameters, the work runs (and is
   * billed) once.
   */
  async submit(input, output_format, adjustments, { meta = {}, pipeline, account } = {}) {
    if (!FORMATS.includes(output_format)) {
      throw new UnsupportedFormatError(
        `output format '${output_format}' is not one of ${FORMATS.join(', ')}`,
        { code: 'unsupported_output_format' });
    }
    const data = await readInput(input);
    const sha = crypto.createHash('sha256').update(data).digest('hex');
    const envelope = { output_format, adjustments: adjustments || {}, meta };
    if (pipeline !== undefined) envelope.pipeline = pipeline;
    if (account !== undefined) envelope.account = account;
    const url = `${this.endpoint}/${this.metaParts.join('/')}/submitted/${sha}/`;
    let answer = await this._call('POST', url, { json: envelope });
    if (answer.status === 'needs-file') {
      answer = await this._call('POST', url, {
        form: () => {
          const form = new FormData();
          form.append('envelope', JSON.stringify(envelope)); // first: the envelope, a plain field
          form.append('image', new Blob([data], { type: 'application/octet-stream' }), 'input');
          return form;
        },
      });
    }
    const thread = await this._wait(answer);
    return this._download(thread);
  }

  status(thread_id) { return this._call('GET', `${this.endpoint}/threads/${thread_id}`); }

  cancel(thread_id) { return this._call('POST', `${this.endpoint}/threads/${thread_id}/cancel`); }

  balance(account) { return this._call('GET', this._billing('balance', account)); }

  async history(account) { return (await this._call('GET', this._billing('history', account))).days; }

  _billing(what, account) {
    return `${this.endpoint}/billing/${what}${account ? `?account=${encodeURIComponent(account)}` : ''}`;
  }

  async _wait(answer) {
    const started = Date.now();
    let interval = this.pollMs;
    while (answer.status === 'processing') {
      if (Date.now() - started > this.waitTimeoutMs) {
        throw new TilemoreError(`thread ${answer.thread_id} still processing`, { code: 'wait_timeout' });
      }
      await sleep(interval);
      interval = Math.min(interval * 1.5, this.maxPollMs);
      answer = await this.status(answer.thread_id);
    }
    if (answer.status === 'failed') {
      const err = answer.error || {};
      throw new TaskFailedError(err.message || 'the thread failed', { code: err.code || 'failed', threadId: answer.thread_id });
    }
    if (answer.status === 'canceled') {
      throw new TaskCanceledError(`thread ${answer.thread_id} was canceled`, { code: 'canceled' });
    }
    return answer;
  }

  async _download(thread) {
    const info = thread.result;
    let res = await this._send('GET', info.url, { redirect: 'manual' });
    if ([301, 302, 303, 307, 308].includes(res.status)) {
      // a presigned link: it carries its own signature, and no credentials may go with it
      res = await this._send('GET', res.headers.get('location'), { auth: false });
    }
    if (res.status >= 400) throw errorFor(res.status, parse(res.body));
    if (crypto.createHash('sha256').update(res.body).digest('hex') !== info.sha256) {
      throw new ServerError('the downloaded result does not match its hash', { code: 'corrupt' });
    }
    const stream = Readable.from([res.body]);
    stream.tilemore = {
      thread_id: thread.thread_id, sha256: info.sha256, content_type: info.content_type,
      width: info.width, height: info.height, bytes: info.bytes,
      credits_charged: thread.credits_charged, answer: thread,
    };
    return stream;
  }

  async _call(method, url, options = {}) {
    const res = await this._send(method, url, options);
    const body = parse(res.body);
    if (res.status >= 400) throw errorFor(res.status, body);
    return body;
  }

  async _send(method, url, { json, form, auth = true, redirect = 'follow' } = {}) {
    for (let attempt = 0; ; attempt += 1) {
      const headers = { ...(auth ? this.auth : {}) };
      let body;
      if (json !== undefined) {
        headers['Content-Type'] = 'application/json';
        body = JSON.stringify(json);
      } else if (form) {
        body = form(); // a fresh body for every attempt
      }
      this._debug(`→ ${method} ${url}${json !== undefined ? ` ${body}` : form ? ' (multipart)' : ''}`);
      try {
        const res = await fetch(url, { method, headers, body, redirect, signal: AbortSignal.timeout(this.timeoutMs) });
        const buffer = Buffer.from(await res.arrayBuffer());
        this._debug(`← ${res.status} ${buffer.subarray(0, 500).toString()}`);
        if (RETRY_STATUSES.has(res.status) && attempt < this.maxRetries) {
          await sleep(this._pause(attempt, res.headers.get('retry-after')));
          continue;
        }
        return { status: res.status, headers: res.headers, body: buffer };
      } catch (e) {
        this._debug(`× ${method} ${url}: ${e.cause ? e.cause.code || e.cause.message : e.message}`);
        if (attempt >= this.maxRetries) {
          throw new ConnectionFailed(`${method} ${url} failed after ${attempt + 1} attempts: ${e.cause ? e.cause.code || e.cause.message : e.message}`,
            { code: 'connection_failed' });
        }
        await sleep(this._pause(attempt, null));
      }
    }
  }

  _pause(attempt, retryAfter) {
    const seconds = Number(retryAfter);
    if (retryAfter !== null && Number.isFinite(seconds)) return Math.min(seconds * 1000, this.maxBackoffMs);
    return Math.min(this.maxBackoffMs, this.backoffMs * 2 ** attempt) * (0.5 + Math.random() / 2);
  }

  _debug(message) {
    if (this.debugMode) console.error(`tilemore-sdk ${message}`);
  }
}

function parse(buffer) {
  try { return JSON.parse(buffer.toString()); } catch { return buffer.toString(); }
}

module.exports = {
  Tilemore, FORMATS, TilemoreError, InputError, UnsupportedFormatError, AuthenticationError,
  PermissionDeniedError, NotFoundError, InsufficientCreditsError, InvalidRequestError,
  ConflictError, ServerError, ConnectionFailed, TaskFailedError, TaskCanceledError,
  WebhookSignatureError, webhooks,
};
module.exports.default = Tilemore;
