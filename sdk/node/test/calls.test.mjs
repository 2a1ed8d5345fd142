// The NodeJS SDK's calls beyond submit, against the real service (started by the Python
// harness) and, for answers it cannot be made to give, a scripted server.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, test } from 'node:test';

import Tilemore, * as sdk from '../index.mjs';
import { scripted } from './scripted.mjs';
import { startService } from './service.mjs';

const ADJUST = { master: { algorithm: 'bilateral' }, shifter: { resize: { width: 48 } } };

let service;
let info;

before(async () => {
  service = await startService({ stderr: 'ignore' });
  ({ info } = service);
});

after(() => { service?.stop(); });

const client = (options = {}) => new Tilemore({
  apiEndpoint: info.url, apiToken: info.token, domain: 'acme', pollIntervalMs: 50, ...options,
});
const sha = (bytes) => createHash('sha256').update(bytes).digest('hex');
const tmp = () => mkdtempSync(path.join(tmpdir(), 'tm-calls-'));

test('camelCase and the guide snake_case options both work', async () => {
  const snake = new Tilemore({ api_endpoint: info.url, api_token: info.token, domain: 'acme', debug_mode: false, poll_interval_ms: 50 });
  assert.equal(snake.pollMs, 50);
  assert.equal((await snake.balance()).account, 'acme');
  assert.equal((await client().balance()).account, 'acme');
});

test('settings come from the environment; without a domain the token is a Bearer', async () => {
  const saved = { ...process.env };
  try {
    Object.assign(process.env, { TILEMORE_API_ENDPOINT: info.url, TILEMORE_API_TOKEN: info.token, TILEMORE_DOMAIN: 'acme' });
    assert.equal((await new Tilemore().balance()).account, 'acme');
    delete process.env.TILEMORE_DOMAIN;
    assert.deepEqual(new Tilemore().auth, { Authorization: `Bearer ${info.token}` });
    assert.equal((await new Tilemore().balance()).account, 'acme'); // the token names its domain
    delete process.env.TILEMORE_API_TOKEN;
    assert.throws(() => new Tilemore(), TypeError);
  } finally {
    process.env = saved;
  }
});

test('create returns the thread at once; wait and download finish it', async () => {
  const tm = client();
  const thread = await tm.create(info.samples[0], 'png', ADJUST, { meta: { ref: 'c1' } });
  assert.ok(['processing', 'done'].includes(thread.status));
  assert.deepEqual(thread.meta, { ref: 'c1' });
  const done = await tm.wait(thread);
  assert.equal(done.status, 'done');
  const events = [];
  const out = path.join(tmp(), 'out.png');
  const file = await tm.download(done, { output: out, onProgress: (...e) => events.push(e) });
  assert.equal(file.path, out);
  assert.equal(statSync(out).size, done.result.bytes);
  assert.equal(sha(readFileSync(out)), done.result.sha256);
  assert.deepEqual(events.at(-1), ['download', done.result.bytes, done.result.bytes]);
  assert.deepEqual(readdirSync(path.dirname(out)), ['out.png']); // no partial file left
  const again = await tm.run(info.samples[0], 'png', ADJUST, { meta: { ref: 'c1' }, output: out });
  assert.equal(again.thread_id, done.thread_id); // nothing ran twice
});

test('the upload streams from disk with progress and a known length', async () => {
  const bytes = readFileSync(info.samples[1]);
  const events = [];
  const stream = await client().run(info.samples[1], 'jpeg', ADJUST, { onProgress: (...e) => events.push(e) });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(sha(Buffer.concat(chunks)), stream.tilemore.sha256);
  const phases = events.map((e) => e[0]);
  assert.ok(phases.indexOf('hash') < phases.indexOf('upload') && phases.indexOf('upload') < phases.indexOf('download'));
  assert.deepEqual(events.filter((e) => e[0] === 'hash').at(-1), ['hash', bytes.length, bytes.length]);
  assert.deepEqual(events.filter((e) => e[0] === 'upload').at(-1), ['upload', bytes.length, bytes.length]);
});

test('a stream input is spooled to a temporary file, removed afterwards', async () => {
  const spool = tmp();
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = spool;
  try {
    const pass = new PassThrough();
    const bytes = readFileSync(info.samples[2]);
    setImmediate(() => {
      for (let i = 0; i < bytes.length; i += 1000) pass.write(bytes.subarray(i, i + 1000));
      pass.end();
    });
    const tm = client();
    const thread = await tm.wait(await tm.create(pass, 'png', ADJUST));
    assert.equal(thread.status, 'done');
    assert.deepEqual(readdirSync(spool), []);
    assert.equal((await tm.create(bytes, 'png', ADJUST)).thread_id, thread.thread_id); // every byte hashed
    assert.equal((await tm.create(createReadStream(info.samples[2]), 'png', ADJUST)).thread_id, thread.thread_id);
  } finally {
    process.env.TMPDIR = saved;
  }
});

test('billing calls: operations, sub-accounts, their tokens and payments', async () => {
  const tm = client();
  await tm.run(info.samples[3], 'webp', ADJUST);
  const ops = await tm.operations();
  assert.ok(ops.some((o) => o.kind === 'charge' && o.thread_id), JSON.stringify(ops.map((o) => o.kind)));
  assert.equal((await tm.history({ account: undefined })).length, 31);
  const sub = await tm.createSubaccount('studio');
  assert.equal(sub.account, 'acme/studio');
  assert.deepEqual((await tm.subaccounts()).map((s) => s.name), ['studio']);
  const paid = await tm.recordPayment('studio', 'pay-1', '2.5');
  assert.equal(paid.replayed, false);
  assert.equal((await tm.recordPayment('studio', 'pay-1', '2.5')).replayed, true);
  await assert.rejects(tm.recordPayment('studio', 'pay-1', '3'), sdk.ConflictError);
  assert.equal(Number((await tm.balance('studio')).balance), 2.5);
  const token = await tm.createSubaccountToken('studio');
  const studio = client({ apiToken: token.token });
  assert.equal((await studio.balance()).account, 'acme/studio');
  await assert.rejects(studio.subaccounts(), (e) => e instanceof sdk.PermissionDeniedError && e.code === 'wrong_account');
});

test('every call takes an AbortSignal', async () => {
  const slow = await scripted({
    '/billing/balance': () => [200, {}, { account: 'a' }, 5000],
    '/threads/t1': () => [200, {}, { thread_id: 't1', status: 'processing' }],
  });
  try {
    const tm = new Tilemore({ apiEndpoint: slow.url, apiToken: 't', pollIntervalMs: 50 });
    await assert.rejects(tm.balance({ signal: AbortSignal.abort() }), { name: 'AbortError' });
    assert.equal(slow.requests.length, 0); // an aborted signal sends nothing
    let started = Date.now();
    await assert.rejects(tm.balance({ signal: AbortSignal.timeout(200) }), { name: 'TimeoutError' });
    assert.ok(Date.now() - started < 2000);
    started = Date.now();
    await assert.rejects(tm.wait('t1', { signal: AbortSignal.timeout(300) }), { name: 'TimeoutError' });
    assert.ok(Date.now() - started < 2000 && slow.hits['/threads/t1'].length >= 2);
    await assert.rejects(tm.create(info.samples[0], 'png', {}, { signal: AbortSignal.abort() }), { name: 'AbortError' });
    await assert.rejects(client().run(info.samples[0], 'png', ADJUST, { signal: AbortSignal.abort() }), { name: 'AbortError' });
  } finally {
    await slow.close();
  }
});

test('wait long-polls, and backs off when the service answers early', async () => {
  const processing = { thread_id: 't2', status: 'processing', meta: {} };
  const s = await scripted({
    '/threads/t2': (n) => [200, {}, n >= 4 ? { ...processing, status: 'done' } : processing],
  });
  try {
    const tm = new Tilemore({ apiEndpoint: s.url, apiToken: 't', pollIntervalMs: 50 });
    const started = Date.now();
    assert.equal((await tm.wait('t2')).status, 'done');
    const waits = s.requests.filter((r) => r.path === '/threads/t2' && r.search.startsWith('?wait='));
    assert.equal(waits.length, 3); // the first read is the plain get; then three long polls
    assert.ok(waits.every((r) => Number(r.search.slice(6)) > 0 && Number(r.search.slice(6)) <= 20));
    assert.ok(Date.now() - started >= 100); // it backed off between the early answers
  } finally {
    await s.close();
  }
});

const doneThread = (url) => ({
  thread_id: 't1', status: 'done', meta: {}, result: {
    url: `${url}/results/t1/result.png`, content_type: 'image/png', bytes: 3, sha256: '0'.repeat(64), width: 1, height: 1,
  },
});

test('an expired result is a typed error carrying the request id', async () => {
  const server2 = await scripted({
    '/threads/t1': (n, base) => [200, {}, doneThread(base)],
    '/results/t1/result.png': () => [410, { 'x-request-id': 'req-410' }, { error: { code: 'result_expired', message: 'removed after 7 days' } }],
  });
  try {
    const tm = new Tilemore({ apiEndpoint: server2.url, apiToken: 't', domain: 'acme' });
    await assert.rejects(tm.download('t1'), (e) => e instanceof sdk.ResultExpiredError && e.code === 'result_expired'
      && e.status === 410 && e.requestId === 'req-410');
    assert.equal(server2.hits['/results/t1/result.png'].length, 1); // a 410 is not retried
  } finally {
    await server2.close();
  }
});

test('a 429 waits as the RateLimit headers say, and a spent window delays the next request', async () => {
  const balance = { account: 'acme', balance: '1', held: '0', available: '1' };
  const s = await scripted({
    '/billing/balance': (n) => (n === 1
      ? [429, { ratelimit: 'limit=5, remaining=0, reset=1', 'ratelimit-policy': '5;w=1' }, { error: { code: 'rate_limited', message: 'slow down' } }]
      : [200, {}, balance]),
    '/billing/history': () => [200, { ratelimit: '"default";r=0;t=1' }, { days: [] }],
  });
  try {
    const tm = new Tilemore({ apiEndpoint: s.url, apiToken: 't', backoffMs: 10 });
    assert.equal((await tm.balance()).balance, '1');
    const [first, second] = s.hits['/billing/balance'];
    assert.ok(second - first >= 900, `${second - first} ms`);
    await tm.history();
    const started = Date.now();
    await tm.history();
    assert.ok(Date.now() - started >= 900);
  } finally {
    await s.close();
  }
});

test("a 202's Retry-After (the service's polling hint) holds back neither the next poll nor other calls", async () => {
  const processing = { thread_id: 't1', status: 'processing' };
  const s = await scripted({
    '/threads/t1': (n) => (n === 1 ? [202, { 'retry-after': '1' }, processing]
      : [200, {}, { ...processing, status: 'canceled' }]),
    '/billing/balance': () => [200, {}, { account: 'acme', balance: '1', held: '0', available: '1' }],
  });
  try {
    const tm = new Tilemore({ apiEndpoint: s.url, apiToken: 't', pollIntervalMs: 10 });
    assert.equal((await tm.get('t1')).status, 'processing');
    const started = Date.now();
    assert.equal((await tm.balance()).balance, '1');
    assert.equal((await tm.wait('t1', { check: false })).status, 'canceled');
    assert.ok(Date.now() - started < 800, `${Date.now() - started} ms`);
  } finally {
    await s.close();
  }
});

test('a 429 that persists is a RateLimitError', async () => {
  const s = await scripted({
    '/billing/balance': () => [429, {
      'retry-after': '0', 'ratelimit-limit': '10', 'ratelimit-remaining': '0', 'ratelimit-reset': '0', 'x-request-id': 'req-429',
    }, { error: { code: 'rate_limited', message: 'slow down' } }],
  });
  try {
    const tm = new Tilemore({ apiEndpoint: s.url, apiToken: 't', maxRetries: 2 });
    await assert.rejects(tm.balance(), (e) => e instanceof sdk.RateLimitError && e.status === 429 && e.requestId === 'req-429'
      && e.retryAfter === 0 && e.rateLimit.limit === 10 && e.rateLimit.remaining === 0);
    assert.equal(s.hits['/billing/balance'].length, 3);
  } finally {
    await s.close();
  }
});

test('the upload is one multipart body of known length, the envelope first', async () => {
  const s2 = await scripted({
    [`/sdk/submitted/${sha(readFileSync(info.samples[0]))}/`]: (n) => (n === 1
      ? [200, {}, { status: 'needs-file' }]
      : [202, {}, { thread_id: 't9', status: 'processing' }]),
  });
  try {
    const thread = await new Tilemore({ apiEndpoint: s2.url, apiToken: 't' }).create(info.samples[0], 'png', {});
    assert.equal(thread.thread_id, 't9');
    const upload = s2.requests[1];
    const size = statSync(info.samples[0]).size;
    assert.equal(upload.headers['transfer-encoding'], undefined);
    assert.equal(Number(upload.headers['content-length']), upload.body.length);
    assert.ok(upload.body.length > size);
    assert.ok(upload.body.indexOf('name="envelope"') < upload.body.indexOf('name="image"'));
  } finally {
    await s2.close();
  }
});

test('list pages the threads newest first, with filters; listAll follows the cursors', async () => {
  const shop = client({ metaParts: ['sdk', 'shop-n'] });
  const made = [];
  for (const sample of info.samples.slice(0, 3)) made.push(await shop.wait(await shop.create(sample, 'png', { shifter: { resize: { width: 40 } } })));
  const tm = client();
  const page = await tm.list({ metaPart: 'shop-n', limit: 2 });
  assert.deepEqual(page.threads.map((t) => t.thread_id), [made[2].thread_id, made[1].thread_id]);
  assert.ok(page.next_cursor);
  const last = await tm.list({ meta_part: ['sdk', 'shop-n'], limit: 2, cursor: page.next_cursor });
  assert.deepEqual(last.threads.map((t) => t.thread_id), [made[0].thread_id]);
  assert.equal(last.next_cursor, null);
  const every = [];
  for await (const t of tm.listAll({ metaPart: 'shop-n', limit: 1 })) every.push(t.thread_id);
  assert.deepEqual(every, made.map((t) => t.thread_id).reverse());
  assert.ok((await tm.list({ status: 'done', createdSince: new Date(Date.now() - 3600e3) })).threads.every((t) => t.status === 'done'));
  await assert.rejects(tm.list({ limit: 0 }), (e) => e instanceof sdk.InvalidRequestError && e.code === 'invalid_limit');
  await assert.rejects(tm.list({ cursor: 'nope' }), (e) => e instanceof sdk.InvalidRequestError && e.code === 'invalid_cursor');
});

test('retry runs a failed thread again, as the same thread', async () => {
  const tm = client();
  const failed = await tm.wait(await tm.create(Buffer.from(readFileSync(info.samples[3])), 'jpeg', {}, { pipeline: 'broken' }), { check: false });
  assert.equal(failed.status, 'failed');
  const again = await tm.retry(failed);
  assert.equal(again.thread_id, failed.thread_id);
  await assert.rejects(tm.wait(again), sdk.TaskFailedError); // the operator still breaks
  await assert.rejects(tm.retry('0'.repeat(32)), sdk.NotFoundError);
});

test('of several RateLimit policies (a domain, its sub-account) the tightest counts', async () => {
  const s = await scripted({
    '/billing/balance': () => [200, {
      ratelimit: '"acme";r=7;t=0, "acme/studio";r=0;t=1', 'ratelimit-policy': '"acme";q=10;w=1, "acme/studio";q=2;w=1',
    }, { account: 'acme/studio', balance: '1', held: '0', available: '1' }],
  });
  try {
    const tm = new Tilemore({ apiEndpoint: s.url, apiToken: 't' });
    await tm.balance();
    const started = Date.now();
    await tm.balance();
    assert.ok(Date.now() - started >= 900, 'the sub-account had none left: the next call waited');
    assert.deepEqual(sdk.RateLimitError.prototype instanceof sdk.TilemoreError, true);
  } finally {
    await s.close();
  }
});

test('wait gives up after its timeout', async () => {
  const s = await scripted({ '/threads/t1': () => [200, {}, { thread_id: 't1', status: 'processing' }] });
  try {
    const tm = new Tilemore({ apiEndpoint: s.url, apiToken: 't', pollIntervalMs: 50 });
    const started = Date.now();
    await assert.rejects(tm.wait('t1', { timeoutMs: 500 }), (e) => e instanceof sdk.WaitTimeout && e.code === 'wait_timeout');
    assert.ok(Date.now() - started < 3000 && s.hits['/threads/t1'].length >= 3);
  } finally {
    await s.close();
  }
});
