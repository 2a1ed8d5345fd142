// The webhook signature verifier: what it accepts and what it refuses; the service's own
// signer (payment notifications, Python) and this verifier agree on the format.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';

import { webhooks, WebhookSignatureError, TilemoreError } from '../index.mjs';
import { python, repo } from './service.mjs';

const BODY = JSON.stringify({ type: 'thread.done', data: { thread_id: 't1' } });
const SECRET = 'whsec_new';
const OLD = 'whsec_old';
const now = () => Math.floor(Date.now() / 1000);

const refused = (header, { secret = SECRET, body = BODY, ...options } = {}) => {
  try {
    webhooks.verify(body, header, secret, options);
  } catch (e) {
    assert.ok(e instanceof WebhookSignatureError && e instanceof TilemoreError);
    return e.code;
  }
  assert.fail(`accepted: ${header}`);
};

test('a fresh signature is accepted and the event parsed', () => {
  const header = webhooks.sign(BODY, SECRET);
  assert.ok(Math.abs(webhooks.verify(BODY, header, SECRET) - now()) <= 1);
  assert.equal(webhooks.constructEvent(Buffer.from(BODY), header, SECRET).data.thread_id, 't1');
});

test("the service's signer and this verifier agree", () => {
  const script = 'import sys; from tilemore.billing.payments import sign; '
    + 'print(sign(sys.argv[1].encode(), sys.argv[2].split(","), int(sys.argv[3])))';
  const t = now();
  const header = execFileSync(python, ['-c', script, BODY, `${OLD},${SECRET}`, String(t)], { cwd: repo }).toString().trim();
  assert.equal(header, webhooks.sign(BODY, [OLD, SECRET], t));
  assert.equal(webhooks.verify(BODY, header, SECRET), t);
});

test('rotation: either secret matches', () => {
  const header = webhooks.sign(BODY, [OLD, SECRET]);
  assert.ok(webhooks.verify(BODY, header, SECRET));
  assert.ok(webhooks.verify(BODY, header, OLD));
  assert.ok(webhooks.verify(BODY, webhooks.sign(BODY, OLD), [SECRET, OLD]));
  assert.equal(refused(webhooks.sign(BODY, OLD)), 'invalid_signature');
});

test('forged signatures are refused', () => {
  assert.equal(refused(webhooks.sign(BODY, 'whsec_guess')), 'invalid_signature');
  assert.equal(refused(webhooks.sign(BODY, SECRET), { body: `${BODY} ` }), 'invalid_signature');
  const t = now();
  assert.equal(refused(`t=${t},v1=${webhooks.signature(BODY, SECRET, t - 1000)}`), 'invalid_signature');
});

test('replayed and future signatures are refused', () => {
  assert.equal(refused(webhooks.sign(BODY, SECRET, now() - 301)), 'stale_signature');
  assert.equal(refused(webhooks.sign(BODY, SECRET, now() + 301)), 'stale_signature');
  const old = webhooks.sign(BODY, SECRET, now() - 3600);
  assert.equal(refused(old, { tolerance: 600 }), 'stale_signature');
  assert.ok(webhooks.verify(BODY, old, SECRET, { tolerance: 4000 }));
});

test('malformed headers are refused', () => {
  const a = 'a'.repeat(64);
  for (const header of ['', undefined, null, 'garbage', `t=,v1=${a}`, `t=12x,v1=${a}`, `v1=${a}`,
    't=1700000000', 't=1700000000,v1=xyz', `t=1700000000,v1=${'A'.repeat(64)}`, `t=1,t=2,v1=${a}`,
    `t=1700000000,${Array(9).fill(`v1=${a}`).join(',')}`, `t=1700000000,v1=${a},${'x'.repeat(1100)}`,
    `t=１７,v1=${a}`]) {
    assert.ok(['missing_signature', 'malformed_signature'].includes(refused(header)), String(header));
  }
});

test('other schemes are ignored, as Stripe does', () => {
  assert.ok(webhooks.verify(BODY, `${webhooks.sign(BODY, SECRET)},v0=deadbeef`, SECRET));
});

test('an empty secret is a programming error', () => {
  assert.throws(() => webhooks.verify(BODY, webhooks.sign(BODY, SECRET), ''), TypeError);
});
