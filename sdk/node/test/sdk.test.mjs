// The NodeJS SDK against the real Tilemore HTTP service, started here by the Python harness.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { createRequire } from 'node:module';

import Tilemore, * as sdk from '../index.mjs';
import { startService } from './service.mjs';

const ADJUST = { master: { algorithm: 'bilateral' }, shifter: { resize: { width: 48 } } };

let service;
let info;

before(async () => {
  service = await startService();
  ({ info } = service);
});

after(() => { service?.stop(); });

const client = (options = {}) => new Tilemore({
  api_endpoint: info.url, api_token: info.token, domain: 'acme', debug_mode: false,
  poll_interval_ms: 50, ...options,
});

const collect = async (stream) => {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
};

test('submit resolves to a stream that pipes to a file', async () => {
  const out = path.join(await mkdtemp(path.join(tmpdir(), 'tm-')), 'out.png');
  const result = await client().submit(info.samples[0], 'png', ADJUST, { meta: { ref: 'n1' } });
  await pipeline(result, createWriteStream(out));
  const bytes = readFileSync(out);
  assert.equal(createHash('sha256').update(bytes).digest('hex'), result.tilemore.sha256);
  assert.equal(result.tilemore.content_type, 'image/png');
  assert.equal(result.tilemore.width, 48);
  assert.ok(Number(result.tilemore.credits_charged) > 0);
});

test('a resubmit reuses the thread and is not charged again', async () => {
  const tm = client();
  const first = await tm.submit(readFileSync(info.samples[1]), 'webp', ADJUST);
  await collect(first);
  const { balance } = await tm.balance();
  const again = await tm.submit(createReadStream(info.samples[1]), 'webp', ADJUST);
  assert.equal(again.tilemore.thread_id, first.tilemore.thread_id);
  assert.equal((await tm.balance()).balance, balance);
  assert.equal((await tm.history()).length, 31);
});

test('a connection dropped mid-upload is recovered', async () => {
  const tm = client({ api_endpoint: info.proxy_url, backoff_ms: 50 });
  const result = await tm.submit(info.samples[2], 'jpeg', ADJUST);
  assert.equal((await collect(result)).length, result.tilemore.bytes);
});

test('a 4xx surfaces as a typed error', async () => {
  await assert.rejects(client().submit(info.samples[3], 'png', { master: { strenght: 1 } }),
    (e) => e instanceof sdk.InvalidRequestError && e.code === 'unknown_parameter' && e.status === 422);
  await assert.rejects(client({ api_token: 'tm_wrong' }).submit(info.samples[3], 'png', {}),
    (e) => e instanceof sdk.AuthenticationError && e.code === 'invalid_token');
  await assert.rejects(client().submit(info.samples[3], 'png', {}, { pipeline: 'broken' }),
    (e) => e instanceof sdk.TaskFailedError && e.code === 'operator_failed');
});

test('bad input fails before any request', async () => {
  const tm = client({ api_endpoint: 'http://127.0.0.1:9' }); // nothing listens there
  await assert.rejects(tm.submit(path.join(info.folder, 'missing.jpg'), 'png', {}),
    (e) => e instanceof sdk.InputError && e.code === 'input_not_found');
  await assert.rejects(tm.submit(info.folder, 'png', {}),
    (e) => e instanceof sdk.InputError && e.code === 'input_unreadable');
  await assert.rejects(tm.submit(info.samples[0], 'gif', {}),
    (e) => e instanceof sdk.UnsupportedFormatError);
});

test('an unreachable server is a clear error after bounded retries', async () => {
  const started = Date.now();
  const tm = client({ api_endpoint: 'http://127.0.0.1:9', max_retries: 3, backoff_ms: 20 });
  await assert.rejects(tm.submit(Buffer.from('x'), 'png', {}),
    (e) => e instanceof sdk.ConnectionFailed && /after 4 attempts/.test(e.message));
  assert.ok(Date.now() - started < 10000);
});

test('CommonJS and ESM give the same classes', () => {
  const cjs = createRequire(import.meta.url)('../index.cjs');
  assert.equal(cjs.Tilemore, Tilemore);
  assert.equal(cjs.InvalidRequestError, sdk.InvalidRequestError);
});
