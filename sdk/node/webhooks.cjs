'use strict';
// Verify that a webhook came from Tilemore. Every delivery is signed, Stripe-style, with the
// endpoint's signing secret (the scheme the service uses for payment notifications):
//   Tilemore-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">
// During a secret rotation the header carries one v1 per secret; one match is enough. A
// timestamp further than `tolerance` seconds from this machine's clock is refused, so a
// captured delivery cannot be replayed later. Pass the raw body, as received, never re-encoded.

const crypto = require('node:crypto');
const { WebhookSignatureError } = require('./errors.cjs');

const HEADER = 'Tilemore-Signature';
const DEFAULT_TOLERANCE = 300;
const MAX_HEADER = 1024;
const MAX_SIGNATURES = 8;
const HEX = /^[0-9a-f]{64}$/;
const DIGITS = /^[0-9]{1,12}$/;

const bytes = (payload) => (typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload));

function signature(payload, secret, timestamp) {
  return crypto.createHmac('sha256', secret)
    .update(`${timestamp}.`).update(bytes(payload)).digest('hex');
}

function sign(payload, secret, timestamp = Math.floor(Date.now() / 1000)) {
  const secrets = Array.isArray(secret) ? secret : [secret];
  return [`t=${timestamp}`, ...secrets.map((s) => `v1=${signature(payload, s, timestamp)}`)].join(',');
}

function parse(header) {
  const malformed = () => new WebhookSignatureError(
    `${HEADER} must read t=<unix seconds>,v1=<64 hex digits>[,v1=...]`, { code: 'malformed_signature' });
  if (header.length > MAX_HEADER) throw malformed();
  let timestamp;
  const candidates = [];
  for (const item of header.split(',')) {
    const trimmed = item.trim();
    const at = trimmed.indexOf('=');
    const name = at < 0 ? trimmed : trimmed.slice(0, at);
    const value = at < 0 ? '' : trimmed.slice(at + 1);
    if (name === 't' && timestamp === undefined && DIGITS.test(value)) timestamp = Number(value);
    else if (name === 'v1' && HEX.test(value)) candidates.push(value);
    else if (name === 't' || name === 'v1') throw malformed();
    // other schemes (v0, a future v2) are ignored, as Stripe's are
  }
  if (timestamp === undefined || candidates.length === 0 || candidates.length > MAX_SIGNATURES) throw malformed();
  return { timestamp, candidates };
}

/** Check `header` against the raw `payload`; returns its timestamp or throws WebhookSignatureError
 * (code missing_signature, malformed_signature, invalid_signature or stale_signature). */
function verify(payload, header, secret, { tolerance = DEFAULT_TOLERANCE, now } = {}) {
  const secrets = Array.isArray(secret) ? secret : [secret];
  if (secrets.length === 0 || !secrets.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new TypeError("give the endpoint's signing secret (a non-empty string)");
  }
  if (!header) throw new WebhookSignatureError(`no ${HEADER} header`, { code: 'missing_signature' });
  const { timestamp, candidates } = parse(String(header));
  const expected = secrets.map((s) => Buffer.from(signature(payload, s, timestamp)));
  let matched = false; // every pair compared, whatever matched first: the time says nothing
  for (const given of candidates) {
    const g = Buffer.from(given);
    for (const want of expected) matched = crypto.timingSafeEqual(g, want) || matched;
  }
  if (!matched) throw new WebhookSignatureError('no v1 signature matches the body', { code: 'invalid_signature' });
  const clock = now ?? Date.now() / 1000;
  if (Math.abs(clock - timestamp) > tolerance) {
    throw new WebhookSignatureError(
      `the signature's timestamp is ${Math.round(clock - timestamp)} s from now; at most ${tolerance} s is accepted`,
      { code: 'stale_signature' });
  }
  return timestamp;
}

/** `verify`, then the body parsed as JSON. */
function constructEvent(payload, header, secret, options) {
  verify(payload, header, secret, options);
  return JSON.parse(bytes(payload).toString('utf8'));
}

module.exports = { HEADER, DEFAULT_TOLERANCE, signature, sign, verify, constructEvent };
