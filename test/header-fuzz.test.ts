// Property-based fuzzing of the header contract (README "What reaches the apiserver"):
//  1. the pure functions (upstreamRequestHeaders over withRepeatedHeaders, fed header sets that
//     Node's own IncomingMessage built from generated raw lines), 20,000 runs;
//  2. end to end through the real proxy process and the stand-in apiserver, 10,000 generated
//     requests written byte for byte over keep-alive TLS connections;
//  3. proof that the properties bite: deliberately wrong local copies of the filter, and wrong
//     upstream records, must be caught.
// Fixed seed by default; KFP_FUZZ_SEED=<n> changes it (printed in the output, with every failure).
// KFP_FUZZ_PURE_RUNS and KFP_FUZZ_REQUESTS scale the two parts.

import fc from 'fast-check';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import type { Identity } from '../src/auth/identity.js';
import { upstreamRequestHeaders, withRepeatedHeaders, type HeaderPolicy, type HeaderRecord, type OutgoingHeaders } from '../src/proxy/headers.js';
import type { SeenRequest } from '../standin/apiserver.js';
import { basicAuth } from './helpers/clients.js';
import { credentialIdExtra, type PkiName } from './helpers/pki.js';
import { startProxy, type ProxyProcess } from './helpers/proxy.js';
import { KeepAliveConnection, responseHeader, type KeepAliveResponse } from './helpers/raw-https.js';
import { ALICE, CAROL, HTPASSWD_USER, proxyFlags, startStack, type TestUser } from './helpers/setup.js';

const SEED = process.env.KFP_FUZZ_SEED ? Number(process.env.KFP_FUZZ_SEED) : 0x6b6670;
const PURE_RUNS = Number(process.env.KFP_FUZZ_PURE_RUNS ?? 20_000);
const E2E_REQUESTS = Number(process.env.KFP_FUZZ_REQUESTS ?? 10_000);
if (!Number.isSafeInteger(SEED)) throw new Error(`KFP_FUZZ_SEED must be an integer, not ${process.env.KFP_FUZZ_SEED}`);
t.comment(`header fuzz seed ${SEED} (reproduce with KFP_FUZZ_SEED=${SEED})`);

// ---------------------------------------------------------------------------------------------
// The model: how a header name is classified, independently of src/proxy/headers.ts.

/** Read by the apiserver's requestheader authenticator (k8s.io/apiserver headerrequest) as identity. */
function isIdentityName(lower: string): boolean {
  return lower === 'x-remote-user' || lower === 'x-remote-uid' || lower === 'x-remote-group' || lower.startsWith('x-remote-extra-');
}
const CREDENTIAL_NAMES = new Set(['authorization', 'proxy-authorization']);
const HOP_BY_HOP_NAMES = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);
/** Headers Node keeps only the first line of (node:_http_incoming matchKnownFields). */
const NODE_FIRST_ONLY = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);

type HeaderClass = 'identity' | 'credential' | 'forwarded-for' | 'hop-by-hop' | 'impersonate' | 'benign';

function classify(lower: string): HeaderClass {
  if (isIdentityName(lower)) return 'identity';
  if (CREDENTIAL_NAMES.has(lower)) return 'credential';
  if (lower === 'x-forwarded-for') return 'forwarded-for';
  if (HOP_BY_HOP_NAMES.has(lower)) return 'hop-by-hop';
  if (lower.startsWith('impersonate-')) return 'impersonate';
  return 'benign';
}

/** One header line as the client writes it: `${name}:${value}`, value with its optional whitespace. */
interface Line {
  name: string;
  value: string;
}

/** What Node's parser makes of a value: optional whitespace (SP, HTAB) around it is not part of it. */
const trimOws = (value: string): string => value.replace(/^[ \t]+|[ \t]+$/g, '');

function connectionTokens(lines: Line[]): Set<string> {
  const tokens = new Set<string>();
  for (const { name, value } of lines) {
    if (name.toLowerCase() !== 'connection') continue;
    for (const token of value.split(',')) {
      const lower = trimOws(token).toLowerCase();
      if (lower) tokens.add(lower);
    }
  }
  return tokens;
}

/**
 * The client headers that must reach the apiserver, by lower-case name, each with its lines in
 * order: benign headers and (policy permitting) Impersonate-*, minus hop-by-hop headers and those
 * the Connection header names; Node keeps only the first line of its single-valued headers, and
 * drops a header named __proto__ (it cannot be a key of Node's plain headers object).
 */
function expectedClientHeaders(lines: Line[], policy: HeaderPolicy, path: 'forward' | 'upgrade' = 'forward'): Map<string, string[]> {
  const named = connectionTokens(lines);
  const out = new Map<string, string[]>();
  for (const { name, value } of lines) {
    const lower = name.toLowerCase();
    const kind = classify(lower);
    if (kind !== 'benign' && kind !== 'impersonate') continue;
    if (kind === 'impersonate' && !policy.allowImpersonation) continue;
    if (named.has(lower) || lower === '__proto__') continue;
    const values = out.get(lower);
    if (values && NODE_FIRST_ONLY.has(lower)) continue;
    if (values) values.push(trimOws(value));
    else out.set(lower, [trimOws(value)]);
  }
  // The upgrade path sends with node:http, whose client joins Cookie lines into one with '; '
  // (RFC 6265 section 5.4: one Cookie header); undici, on the forwarding path, sends them as they came.
  const cookie = out.get('cookie');
  if (path === 'upgrade' && cookie && cookie.length > 1) out.set('cookie', [cookie.join('; ')]);
  return out;
}

/** client-go's headerKeyEscape, written again here: token bytes kept, every other byte %XX. */
function escapeKey(key: string): string {
  return [...Buffer.from(key, 'utf8')].map((b) => (b < 0x80 && /[!#$&'*+\-.^_`|~0-9A-Za-z]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
}

/** The identity headers the proxy must send for `identity`, and nothing else of that kind. */
function expectedIdentityHeaders(identity: Identity, forwardedFor: string | undefined): Map<string, string[]> {
  const out = new Map<string, string[]>([['x-remote-user', [identity.user]]]);
  if (identity.groups.length > 0) out.set('x-remote-group', [...identity.groups]);
  for (const [key, values] of Object.entries(identity.extra)) if (values.length > 0) out.set(`x-remote-extra-${escapeKey(key)}`, [...values]);
  if (forwardedFor) out.set('x-forwarded-for', [forwardedFor]);
  return out;
}

function asLists(headers: OutgoingHeaders): Map<string, string[]> {
  return new Map(Object.entries(headers).map(([name, value]) => [name, Array.isArray(value) ? [...value] : [value]]));
}

/** Differences between two name -> lines maps, as readable sentences (empty when equal). */
function diff(actual: Map<string, string[]>, expected: Map<string, string[]>, only?: (name: string) => boolean): string[] {
  const problems: string[] = [];
  for (const name of new Set([...actual.keys(), ...expected.keys()])) {
    if (only && !only(name)) continue;
    const a = actual.get(name);
    const e = expected.get(name);
    if (!isDeepStrictEqual(a, e)) problems.push(`${JSON.stringify(name)}: got ${JSON.stringify(a)}, expected ${JSON.stringify(e)}`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Generators shared by both parts.

const TOKEN_CHARS = [..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"];
const token = (minLength: number, maxLength: number) => fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength, maxLength });
const latin1 = (min: number, max: number) => fc.integer({ min, max }).map((c) => String.fromCharCode(c));

/** Extra keys as a client might write them, the empty key ('X-Remote-Extra-') included. */
const extraKey = fc.oneof(fc.constant(''), token(1, 10), fc.constantFrom('scopes', 'acme.com%2fproject', '%41', 'authentication.kubernetes.io%2fcredential-id', '-', '%'));
const IDENTITY_BASE = fc.oneof({ weight: 3, arbitrary: fc.constantFrom('x-remote-user', 'x-remote-group', 'x-remote-uid') }, { weight: 2, arbitrary: extraKey.map((k) => `x-remote-extra-${k}`) });
const IMPERSONATE_BASE = fc.oneof({ weight: 3, arbitrary: fc.constantFrom('impersonate-user', 'impersonate-group', 'impersonate-uid') }, { weight: 1, arbitrary: extraKey.map((k) => `impersonate-extra-${k}`) });
// Names next to the dangerous ones that are NOT identity headers: they must pass untouched.
// Names of Object.prototype's own properties: this fuzzer once found a header named
// `constructor` (sent twice, named in Connection) that reached the apiserver, because a lookup
// found Object.prototype.constructor. Node lower-cases names, so these are the ones a client can hit.
const PROTOTYPE_NAMES = ['constructor', 'tostring', 'valueof', 'hasownproperty'];
const NEAR_MISSES = [
  'x-remote-users',
  'x-remote-extra',
  'x-remote-extras',
  'x-remote-user-agent',
  'x-remote',
  'x-remote-groups',
  'x-remoteuser',
  'x-remote_user',
  'x-remote-uids',
  'remote-user',
  'x-forwarded-for-x',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-impersonate-user',
  'impersonate',
  'impersonateuser',
  'authorization-info',
  'x-authorization',
  'keep-alive-x',
  '__proto__',
  ...PROTOTYPE_NAMES,
];
const COMMON = ['accept', 'accept-language', 'accept-encoding', 'user-agent', 'cookie', 'x-request-id', 'cache-control', 'if-none-match', 'referer', 'from', 'content-type', 'sec-websocket-protocol'];
const BENIGN_BASE = fc.oneof(
  fc.constantFrom(...COMMON),
  fc.constantFrom(...NEAR_MISSES),
  token(1, 12).map((s) => `x-${s}`),
);

/** Header values: printable ASCII, tabs, commas, quotes, obs-text (0x80-0xff), optional whitespace around. */
const VALUE_CORE = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.string({ unit: fc.oneof({ weight: 12, arbitrary: latin1(0x21, 0x7e) }, { weight: 3, arbitrary: fc.constantFrom(' ', '\t', ',', '"', ';', '=', ', ') }, { weight: 3, arbitrary: latin1(0x80, 0xff) }), maxLength: 24 }),
  },
  { weight: 2, arbitrary: fc.constantFrom('system:masters', 'root', 'alice', 'bob', 'devs', 'system:authenticated', 'a, b', '"quoted, value"', '') },
);
const OWS = fc.string({ unit: fc.constantFrom(' ', '\t'), maxLength: 2 });
const VALUE = fc.tuple(OWS, VALUE_CORE, OWS).map(([before, core, after]) => before + core + after);

const lineOf = (base: fc.Arbitrary<string>, value: fc.Arbitrary<string> = VALUE): fc.Arbitrary<Line> => fc.record({ name: fc.mixedCase(base), value });
/** The same header 2-4 times, each line in its own letter case. */
const burstOf = (base: fc.Arbitrary<string>, value: fc.Arbitrary<string> = VALUE): fc.Arbitrary<Line[]> => base.chain((b) => fc.array(lineOf(fc.constant(b), value), { minLength: 2, maxLength: 4 }));
const one = (arb: fc.Arbitrary<Line>) => arb.map((line) => [line]);
/** Many identity lines at once (20-60), names mixed: a flood rather than a repeat. */
const FLOOD = fc.array(lineOf(fc.oneof(IDENTITY_BASE, IMPERSONATE_BASE)), { minLength: 20, maxLength: 60 });

/** Inserts `extra` into `lines`, keeping the order of both, at positions drawn from `picks`. */
function interleave(lines: Line[], extra: Line[], picks: number[]): Line[] {
  const out = [...lines];
  const positions = extra.map((_, i) => (picks[i] ?? 0) % (lines.length + 1)).sort((a, b) => a - b);
  positions.forEach((position, i) => out.splice(position + i, 0, extra[i]!));
  return out;
}

/** Connection lines naming some of the headers present (and others), in any case and spacing. */
function connectionLinesFor(lines: Line[], options: { close: boolean; exclude: string[] }): fc.Arbitrary<Line[]> {
  const present = [...new Set(lines.map((l) => l.name.toLowerCase()))].filter((n) => !options.exclude.includes(n) && n !== 'close');
  // Also names the proxy itself sets or reads: naming them must not remove the proxy's own.
  const candidates = [...new Set([...present, 'keep-alive', 'x-not-sent', 'authorization', 'x-forwarded-for', 'x-remote-user', 'x-remote-group', 'impersonate-user', ...(options.close ? ['close'] : [])])];
  const tokenArb = fc.oneof({ weight: 6, arbitrary: fc.mixedCase(fc.constantFrom(...candidates)) }, { weight: 1, arbitrary: token(1, 8).filter((s) => !options.exclude.includes(s) && s !== 'close' && s !== 'upgrade') });
  const separator = fc.constantFrom(',', ', ', ' , ', '\t,', ',,');
  const value = fc.tuple(fc.array(fc.tuple(tokenArb, separator), { minLength: 1, maxLength: 5 }), OWS).map(([parts, pad]) => pad + parts.map(([tok, sep], i) => (i === 0 ? tok : sep + tok)).join(''));
  return fc.array(lineOf(fc.constant('connection'), value), { maxLength: 2 });
}

// ---------------------------------------------------------------------------------------------
// Part 1: the pure functions.

/** What Node's parser hands the proxy for these lines: a real IncomingMessage (headers, headersDistinct). */
const UNCONNECTED = new Socket();
function nodeMessage(lines: Line[]): IncomingMessage {
  const message = new IncomingMessage(UNCONNECTED);
  const raw = lines.flatMap(({ name, value }) => [name, trimOws(value)]);
  message.rawHeaders = raw;
  (message as IncomingMessage & { _addHeaderLines(headers: string[], n: number): void })._addHeaderLines(raw, raw.length);
  return message;
}

/** reply-from's own pre-processing (index.js): Connection and what it names deleted, host replaced. */
function afterReplyFrom(headers: HeaderRecord): HeaderRecord {
  const copy: HeaderRecord = { ...headers };
  const connection = copy.connection;
  if (typeof connection === 'string') for (const name of connection.toLowerCase().split(',')) if (name.trim()) delete copy[name.trim()];
  delete copy.connection;
  copy.host = '127.0.0.1:6443';
  return copy;
}

interface PureCase {
  lines: Line[];
  identity: Identity;
  forwardedFor: string | undefined;
  policy: HeaderPolicy;
}

const PURE_LINES = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: one(lineOf(IDENTITY_BASE)) },
      { weight: 3, arbitrary: burstOf(IDENTITY_BASE) },
      { weight: 1, arbitrary: FLOOD },
      { weight: 2, arbitrary: one(lineOf(fc.constantFrom('authorization', 'proxy-authorization', 'x-forwarded-for'))) },
      { weight: 1, arbitrary: burstOf(fc.constantFrom('authorization', 'proxy-authorization', 'x-forwarded-for')) },
      { weight: 3, arbitrary: one(lineOf(IMPERSONATE_BASE)) },
      { weight: 2, arbitrary: burstOf(IMPERSONATE_BASE) },
      { weight: 2, arbitrary: one(lineOf(fc.constantFrom(...HOP_BY_HOP_NAMES).filter((n) => n !== 'connection'))) },
      { weight: 5, arbitrary: one(lineOf(BENIGN_BASE)) },
      { weight: 2, arbitrary: burstOf(BENIGN_BASE) },
    ),
    { maxLength: 14 },
  )
  .map((groups) => groups.flat())
  .chain((lines) => connectionLinesFor(lines, { close: true, exclude: [] }).chain((conn) => fc.array(fc.nat(), { minLength: conn.length, maxLength: conn.length }).map((picks) => interleave(lines, conn, picks))));

const IDENTITY_VALUE = fc.string({ unit: fc.oneof(latin1(0x20, 0x7e), latin1(0x80, 0xff)), maxLength: 16 });
const PURE_IDENTITY: fc.Arbitrary<Identity> = fc.record({
  method: fc.constantFrom('basic' as const, 'x509' as const),
  upstreamAuth: fc.constant('front-proxy' as const),
  user: IDENTITY_VALUE.filter((u) => u.length > 0),
  groups: fc.array(IDENTITY_VALUE, { maxLength: 4 }),
  // Keys as the apiserver sees them (lower case), escaped on the way out.
  extra: fc.oneof(
    { weight: 3, arbitrary: fc.constant({}) },
    { weight: 1, arbitrary: fc.dictionary(fc.string({ unit: fc.constantFrom(...'abc./:% _-ü'), minLength: 1, maxLength: 8 }), fc.array(IDENTITY_VALUE, { maxLength: 3 }), { maxKeys: 3 }) },
  ),
});

const PURE_CASE: fc.Arbitrary<PureCase> = fc.record({
  lines: PURE_LINES,
  identity: PURE_IDENTITY,
  forwardedFor: fc.option(fc.oneof(fc.ipV4(), fc.constant('203.0.113.9, 10.0.0.1')), { nil: undefined }),
  policy: fc.boolean().map((allowImpersonation) => ({ allowImpersonation })),
});

type HeaderFilter = typeof upstreamRequestHeaders;
type RepeatRestorer = typeof withRepeatedHeaders;

/** The whole contract for one case; returns the violations (empty when it holds). */
function contractViolations(c: PureCase, filter: HeaderFilter = upstreamRequestHeaders, restore: RepeatRestorer = withRepeatedHeaders): string[] {
  const message = nodeMessage(c.lines);
  const expected = new Map([...expectedClientHeaders(c.lines, c.policy), ...expectedIdentityHeaders(c.identity, c.forwardedFor)]);
  const problems: string[] = [];
  // The upgrade path hands over Node's headers as they are; the forwarding path reply-from's copy.
  for (const [path, headers] of [
    ['upgrade', message.headers],
    ['forward', afterReplyFrom(message.headers)],
  ] as const) {
    const out = filter(restore(headers, message), c.identity, c.forwardedFor, c.policy);
    // The forwarding path's Host is reply-from's (no Host line is generated here).
    const actual = asLists(out);
    if (path === 'forward') actual.delete('host');
    problems.push(...diff(actual, expected).map((p) => `${path} path: ${p}`));
    // (Extra keys are escaped with upper-case hex, as client-go does; the apiserver lower-cases names.)
    for (const name of Object.keys(out)) if (!name.startsWith('x-remote-extra-') && name !== name.toLowerCase()) problems.push(`${path} path: output name ${JSON.stringify(name)} is not lower case`);
  }
  return problems;
}

/** Case-insensitivity of the filter itself: input keys in any case (not what Node gives, but the filter must not depend on it for identity). */
function mixedCaseKeyViolations(c: PureCase, filter: HeaderFilter = upstreamRequestHeaders): string[] {
  const byName = new Map<string, string[]>();
  for (const { name, value } of c.lines) {
    if (name.toLowerCase() === 'connection') continue; // the filter reads Connection by its lower-case key only
    byName.set(name, [...(byName.get(name) ?? []), trimOws(value)]);
  }
  const incoming: HeaderRecord = Object.fromEntries([...byName].map(([name, values]) => [name, values.length === 1 ? values[0]! : values]));
  const out = asLists(filter(incoming, c.identity, c.forwardedFor, c.policy));
  const identity = expectedIdentityHeaders(c.identity, c.forwardedFor);
  const problems = diff(out, identity, (n) => ['identity', 'credential', 'forwarded-for', 'hop-by-hop'].includes(classify(n.trim().toLowerCase())));
  const sentImpersonation = new Set(
    c.policy.allowImpersonation
      ? Object.keys(incoming)
          .map((n) => n.toLowerCase())
          .filter((n) => n.startsWith('impersonate-'))
      : [],
  );
  const gotImpersonation = new Set([...out.keys()].filter((n) => n.toLowerCase().startsWith('impersonate-')));
  if (!isDeepStrictEqual(gotImpersonation, sentImpersonation)) problems.push(`impersonation names ${JSON.stringify([...gotImpersonation])}, expected ${JSON.stringify([...sentImpersonation])}`);
  return problems.map((p) => `mixed-case keys: ${p}`);
}

const pureProperty = (filter?: HeaderFilter, restore?: RepeatRestorer) =>
  fc.property(PURE_CASE, (c) => {
    const problems = [...contractViolations(c, filter, restore), ...mixedCaseKeyViolations(c, filter)];
    if (problems.length > 0) throw new Error(problems.join('\n'));
  });

t.test(`pure: upstreamRequestHeaders(withRepeatedHeaders(...)) keeps the contract (${PURE_RUNS} runs)`, async (t) => {
  const started = performance.now();
  const details = fc.check(pureProperty(), { numRuns: PURE_RUNS, seed: SEED });
  t.comment(`${details.numRuns} pure runs in ${Math.round(performance.now() - started)} ms (seed ${SEED})`);
  if (details.failed) {
    t.fail(
      `contract broken; counterexample (seed ${SEED}, path ${details.counterexamplePath}):\n${fc.stringify(details.counterexample)}\n${details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)}`,
    );
  } else {
    t.equal(details.numRuns, PURE_RUNS, 'every run held');
  }
});

// ---------------------------------------------------------------------------------------------
// Part 3a: the pure properties catch deliberately wrong filters (local copies, never src/).

type Flaw = 'none' | 'extra-needs-key' | 'uid-kept' | 'case-sensitive' | 'ignores-connection' | 'keeps-client-xff' | 'deny-misses-extra' | 'client-groups-kept' | 'no-repeat-restore' | 'single-line-only';

/** A copy of upstreamRequestHeaders with one deliberate flaw. */
function flawedFilter(flaw: Flaw): HeaderFilter {
  return (incoming, identity, forwardedFor, policy) => {
    const out: OutgoingHeaders = {};
    const connection = incoming.connection;
    const named = new Set(flaw === 'ignores-connection' ? [] : (Array.isArray(connection) ? connection : connection ? [connection] : []).flatMap((v) => v.split(',').map((s) => s.trim().toLowerCase())).filter(Boolean));
    const clientGroups: string[] = [];
    for (const [rawName, value] of Object.entries(incoming)) {
      if (value === undefined) continue;
      const name = flaw === 'case-sensitive' ? rawName : rawName.toLowerCase();
      if (flaw === 'client-groups-kept' && name === 'x-remote-group') clientGroups.push(...(Array.isArray(value) ? value : [value]));
      const identityHeader =
        name === 'x-remote-user' ||
        (name === 'x-remote-uid' && flaw !== 'uid-kept') ||
        name === 'x-remote-group' ||
        (flaw === 'extra-needs-key' ? /^x-remote-extra-.+/.test(name) : name.startsWith('x-remote-extra-')) ||
        name === 'authorization' ||
        name === 'proxy-authorization';
      const xff = name === 'x-forwarded-for' && (flaw !== 'keeps-client-xff' || forwardedFor !== undefined);
      if (HOP_BY_HOP_NAMES.has(name) || named.has(name) || identityHeader || xff) continue;
      const dropImpersonation = flaw === 'deny-misses-extra' ? ['impersonate-user', 'impersonate-group', 'impersonate-uid'].includes(name) : name.startsWith('impersonate-');
      if (!policy.allowImpersonation && dropImpersonation) continue;
      out[name] = flaw === 'single-line-only' && Array.isArray(value) ? (value[0] ?? '') : value;
    }
    out['x-remote-user'] = identity.user;
    if (identity.groups.length > 0 || clientGroups.length > 0) out['x-remote-group'] = [...clientGroups, ...identity.groups];
    for (const [key, values] of Object.entries(identity.extra)) if (values.length > 0) out[`x-remote-extra-${escapeKey(key)}`] = [...values];
    if (forwardedFor) out['x-forwarded-for'] = forwardedFor;
    return out;
  };
}

t.test('pure: every deliberately flawed copy of the filter is caught', async (t) => {
  t.notOk(fc.check(pureProperty(flawedFilter('none')), { numRuns: 2000, seed: SEED }).failed, 'the local copy without a flaw keeps the contract (it is a faithful copy)');
  const flaws: Flaw[] = ['extra-needs-key', 'uid-kept', 'case-sensitive', 'ignores-connection', 'keeps-client-xff', 'deny-misses-extra', 'client-groups-kept', 'no-repeat-restore', 'single-line-only'];
  for (const flaw of flaws) {
    const restore: RepeatRestorer | undefined = flaw === 'no-repeat-restore' ? (headers) => headers : undefined;
    const filter = flaw === 'no-repeat-restore' ? upstreamRequestHeaders : flawedFilter(flaw);
    const details = fc.check(pureProperty(filter, restore), { numRuns: PURE_RUNS, seed: SEED, endOnFailure: true });
    t.ok(details.failed, `flaw "${flaw}" is caught (after ${details.numRuns} runs)`);
  }
});

// A regression test for the one bug this fuzzer found (fixed in withRepeatedHeaders).
t.test('regression, pure: a repeated "constructor" header named in Connection is dropped', async (t) => {
  const message = nodeMessage([
    { name: 'Connection', value: 'constructor' },
    { name: 'Constructor', value: 'a' },
    { name: 'constructor', value: 'b' },
  ]);
  const out = upstreamRequestHeaders(withRepeatedHeaders(afterReplyFrom(message.headers), message), { method: 'basic', user: 'alice', groups: [], extra: {}, upstreamAuth: 'front-proxy' }, '127.0.0.1', { allowImpersonation: true });
  t.notOk(Object.hasOwn(out, 'constructor'), `forwarding path output has no "constructor" (got ${JSON.stringify(Object.hasOwn(out, 'constructor') ? out.constructor : undefined)})`);
  const upgradePath = upstreamRequestHeaders(withRepeatedHeaders(message.headers, message), { method: 'basic', user: 'alice', groups: [], extra: {}, upstreamAuth: 'front-proxy' }, '127.0.0.1', { allowImpersonation: true });
  t.notOk(Object.hasOwn(upgradePath, 'constructor'), 'upgrade path output has no "constructor" (this path is right)');
});

// ---------------------------------------------------------------------------------------------
// Part 2: end to end, through the real proxy process to the stand-in apiserver.

type Tls = 'none' | 'user-alice' | 'user-bob';
const CERT_USERS: Record<Exclude<Tls, 'none'>, { name: string; groups: string[] }> = {
  'user-alice': { name: 'alice', groups: ['devs', 'ops'] },
  'user-bob': { name: 'bob', groups: ['viewers'] },
};
const BASIC_USERS: TestUser[] = [ALICE, CAROL, HTPASSWD_USER];

interface E2eCase {
  policy: 'allow' | 'deny';
  tls: Tls;
  /** Connection: Upgrade + Upgrade: websocket, which Node hands to the proxy's upgrade path. */
  upgrade: boolean;
  /** Every header line in order, Host and Authorization included. */
  lines: Line[];
  /** Transfer-Encoding: chunked was sent: an empty chunked body follows the head. */
  chunked: boolean;
  /** A line Node's strict parser refuses (raw text, inserted before line `hostileAt`), or null. */
  hostile: string | null;
  hostileAt: number;
  /** Who the proxy must say the user is. */
  user: { name: string; groups: string[] };
  /** Labels for the coverage report. */
  tags: string[];
}

const b64 = (user: TestUser) => basicAuth(user).slice('Basic '.length);
const AUTH_SCHEME = fc.constantFrom('Basic', 'basic', 'BASIC', 'bAsIc');
const validBasic = (user: TestUser) => fc.tuple(OWS, AUTH_SCHEME, fc.constantFrom(' ', '  ', '\t'), OWS).map(([a, scheme, sep, b]) => `${a}${scheme}${sep}${b64(user)}${b}`);
const garbageAuth = fc.oneof(fc.constantFrom('Bearer abc.def.ghi', 'Basic', 'Basic !!!', `Basic ${Buffer.from('root:root').toString('base64')}`, `Basic ${Buffer.from('alice:wrong').toString('base64')}`, 'Negotiate YII=', ''), VALUE);
const authLine = (value: fc.Arbitrary<string>) => lineOf(fc.constant('authorization'), value);

const HOSTILE: fc.Arbitrary<string> = fc.oneof(
  fc.mixedCase(fc.constant('x-remote-user')).map((n) => `${n} : root`),
  fc.mixedCase(fc.constant('x-remote-group')).map((n) => `${n}\t: system:masters`),
  fc.constant('X-Remote-Extra- : x'),
  fc.constant('X-Remote-Group: devs\r\n system:masters'),
  fc.constant('Accept: x\nX-Remote-User: root'),
  fc.constant('Accept: x\rX-Remote-User: root'),
  fc.constantFrom('\x00', '\x01', '\x1b', '\x7f', '\x0b').map((c) => `X-Remote-User: ro${c}ot`),
  fc.constantFrom('X-Remote-User(1): root', 'X-R\xe9mote-User: root', 'X-Remote User: root', 'X-Remote-User root', ': root', 'X-Remote-User\x00: root'),
);

const E2E_BODY_LINES = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: one(lineOf(IDENTITY_BASE)) },
      { weight: 3, arbitrary: burstOf(IDENTITY_BASE) },
      { weight: 1, arbitrary: FLOOD },
      { weight: 2, arbitrary: one(lineOf(fc.constantFrom('proxy-authorization', 'x-forwarded-for'))) },
      { weight: 1, arbitrary: burstOf(fc.constantFrom('proxy-authorization', 'x-forwarded-for')) },
      { weight: 3, arbitrary: one(lineOf(IMPERSONATE_BASE)) },
      { weight: 2, arbitrary: burstOf(IMPERSONATE_BASE) },
      { weight: 1, arbitrary: one(lineOf(fc.constantFrom('keep-alive', 'proxy-connection', 'te', 'trailer'))) },
      { weight: 1, arbitrary: one(lineOf(fc.constant('upgrade'), fc.constantFrom('h2c', 'websocket', 'SPDY/3.1'))) },
      { weight: 1, arbitrary: one(lineOf(fc.constant('expect'), fc.mixedCase(fc.constant('100-continue')))) },
      { weight: 1, arbitrary: one(lineOf(fc.constant('transfer-encoding'), fc.mixedCase(fc.constant('chunked')))) },
      { weight: 5, arbitrary: one(lineOf(BENIGN_BASE)) },
      { weight: 2, arbitrary: burstOf(BENIGN_BASE) },
    ),
    { maxLength: 14 },
  )
  .map((groups) => groups.flat());

const E2E_CASE: fc.Arbitrary<E2eCase> = fc
  .record({
    policy: fc.constantFrom('allow' as const, 'deny' as const),
    tls: fc.constantFrom<Tls>('none', 'user-alice', 'user-bob'),
    upgrade: fc.oneof({ weight: 30, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    closeToken: fc.oneof({ weight: 30, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    basicUser: fc.constantFrom(...BASIC_USERS),
    lines: E2E_BODY_LINES,
    hostile: fc.oneof({ weight: 24, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: HOSTILE }),
    picks: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
  })
  .chain(({ policy, tls, upgrade, closeToken, basicUser, lines: generated, hostile, picks }) => {
    // At most one Transfer-Encoding line (chunked twice is refused); none, and no Expect, on an upgrade.
    let lines = generated.filter((l, i, all) => l.name.toLowerCase() !== 'transfer-encoding' || (!upgrade && all.findIndex((x) => x.name.toLowerCase() === 'transfer-encoding') === i));
    if (upgrade) lines = lines.filter((l) => !['upgrade', 'expect'].includes(l.name.toLowerCase()));
    const primaryAuth =
      tls === 'none'
        ? authLine(validBasic(basicUser)).map((l) => [l])
        : fc.oneof(
            fc.constant([] as Line[]),
            authLine(fc.oneof(garbageAuth, ...BASIC_USERS.map(validBasic))).map((l) => [l]),
          );
    const laterAuth = fc.array(authLine(fc.oneof(garbageAuth, ...BASIC_USERS.map(validBasic))), { maxLength: 2 });
    const upgradeLines: fc.Arbitrary<Line[]> = upgrade
      ? fc
          .tuple(
            lineOf(fc.constant('upgrade'), fc.mixedCase(fc.constant('websocket'))),
            lineOf(fc.constant('connection'), fc.mixedCase(fc.constantFrom('Upgrade', 'keep-alive, Upgrade', 'upgrade,x-not-sent'))),
            fc.constant({ name: 'Sec-WebSocket-Key', value: 'dGhlIHNhbXBsZSBub25jZQ==' }),
            fc.constant({ name: 'Sec-WebSocket-Version', value: '13' }),
          )
          .map((ls) => [...ls])
      : fc.constant([]);
    return fc.tuple(primaryAuth, laterAuth, upgradeLines, connectionLinesFor(lines, { close: closeToken, exclude: ['upgrade'] }), fc.mixedCase(fc.constant('host'))).map(([primary, later, upgradeHeaders, connection, hostName]) => {
      let all = interleave(lines, connection, picks.slice(0, 2));
      all = interleave(all, upgradeHeaders, picks.slice(2, 6));
      // interleave keeps the order: the primary Authorization line stays the first one (Node keeps the first).
      all = interleave(all, [...primary, ...later], picks.slice(5, 8));
      all = interleave(all, [{ name: hostName, value: ' localhost' }], [picks[1] ?? 0]);
      const user = tls === 'none' ? { name: basicUser.name, groups: basicUser.groups } : CERT_USERS[tls];
      const names = all.map((l) => l.name.toLowerCase());
      const tags = [
        `policy:${policy}`,
        `tls:${tls}`,
        ...(upgrade ? ['upgrade'] : []),
        ...(hostile ? ['hostile'] : []),
        ...(names.includes('x-remote-extra-') ? ['x-remote-extra- (empty key)'] : []),
        ...(names.filter((n) => isIdentityName(n) || n.startsWith('impersonate-')).length >= 20 ? ['flood of 20+ identity/impersonation lines'] : []),
        ...(names.filter((n) => isIdentityName(n)).length >= 2 ? ['identity header repeated'] : []),
        ...(names.some((n) => isIdentityName(n)) ? ['identity header'] : []),
        ...(names.filter((n) => n === 'authorization').length >= 2 ? ['authorization repeated'] : []),
        ...(tls !== 'none' && names.includes('authorization') ? ['certificate + authorization'] : []),
        ...(names.filter((n) => n.startsWith('impersonate-')).length >= 2 ? ['impersonation repeated'] : []),
        ...(all.some((l) => /[\x80-\xff]/.test(l.value)) ? ['obs-text value'] : []),
        ...(all.some((l) => /\t/.test(trimOws(l.value))) ? ['tab inside a value'] : []),
        ...(all.some((l) => trimOws(l.value) === '') ? ['empty value'] : []),
        ...(connectionTokens(all).size > 0 && [...connectionTokens(all)].some((n) => names.includes(n) && n !== 'connection') ? ['connection names a sent header'] : []),
        ...(names.includes('transfer-encoding') ? ['chunked'] : []),
        ...(names.includes('expect') ? ['expect 100-continue'] : []),
        ...(connectionTokens(all).has('close') ? ['connection: close'] : []),
        ...(names.some((n) => NEAR_MISSES.includes(n)) ? ['near-miss name'] : []),
      ];
      const chunked = names.includes('transfer-encoding');
      return { policy, tls, upgrade, lines: all, chunked, hostile, hostileAt: (picks[0] ?? 0) % (all.length + 1), user, tags };
    });
  });

function requestBytes(c: E2eCase, id: number): Buffer {
  const lines = c.lines.map(({ name, value }) => `${name}:${value}`);
  if (c.hostile !== null) lines.splice(c.hostileAt, 0, c.hostile);
  return Buffer.from(`GET /test/identity?fuzz=${id} HTTP/1.1\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n${c.chunked ? '0\r\n\r\n' : ''}`, 'latin1');
}

/** Upstream header lines grouped by trimmed lower-case name (a name with stray whitespace still counts as what it spells). */
function upstreamLines(record: SeenRequest): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [name, value] of record.rawHeaders) {
    const key = name.trim().toLowerCase();
    const values = out.get(key);
    if (values) values.push(value);
    else out.set(key, [value]);
  }
  return out;
}

/**
 * Every way the apiserver's record of `c` breaks the contract (empty when it holds). `extra`: the
 * extra the proxy must state for c's user (a certificate user's credential id; none for a password).
 */
function upstreamViolations(c: E2eCase, record: SeenRequest, upstreamHost: string, extra: Record<string, string[]>): string[] {
  const actual = upstreamLines(record);
  const policy = { allowImpersonation: c.policy === 'allow' };
  // upstreamLines lower-cases names: so must the expected ones (an escaped extra key's %XX is upper-case).
  const identity = [...expectedIdentityHeaders({ method: 'basic', user: c.user.name, groups: c.user.groups, extra, upstreamAuth: 'front-proxy' }, '127.0.0.1')].map(([name, values]): [string, string[]] => [name.toLowerCase(), values]);
  const expected = new Map([...expectedClientHeaders(c.lines, policy, c.upgrade ? 'upgrade' : 'forward'), ...identity]);
  expected.set('host', [upstreamHost]);
  // The request's ID goes upstream as Audit-ID (the generator sends none of its own): one line, a UUID.
  const auditId = actual.get('audit-id');
  if (auditId?.length === 1 && /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(auditId[0]!)) expected.set('audit-id', auditId);
  if (c.upgrade) {
    expected.set('connection', ['Upgrade']);
    expected.set('upgrade', [trimOws(c.lines.find((l) => l.name.toLowerCase() === 'upgrade')?.value ?? '')]);
  } else {
    // undici's own connection management; nothing of the client's Connection header.
    if (isDeepStrictEqual(actual.get('connection'), ['keep-alive'])) actual.delete('connection');
    // A GET forwarded without a body may carry content-length: 0 (undici's framing), nothing else.
    if (isDeepStrictEqual(actual.get('content-length'), ['0'])) actual.delete('content-length');
  }
  // A hostile request that got through is held to the security part only.
  const only = c.hostile === null ? undefined : (n: string) => classify(n) !== 'benign';
  const problems = diff(actual, expected, only);
  const groups = [...c.user.groups, 'system:authenticated'];
  if (record.authn !== 'requestheader' || !isDeepStrictEqual(record.user, { username: c.user.name, groups, extra })) {
    problems.push(`the apiserver authenticated ${record.authn} ${JSON.stringify(record.user)}, expected requestheader ${c.user.name} ${JSON.stringify(groups)} ${JSON.stringify(extra)}`);
  }
  return problems;
}

function jsonMessage(response: KeepAliveResponse): string {
  try {
    return String((JSON.parse(response.body.toString('utf8')) as { message?: unknown }).message ?? '');
  } catch {
    return '';
  }
}

interface Outcome {
  id: number;
  response?: KeepAliveResponse;
  error?: string;
}

t.test(`end to end: ${E2E_REQUESTS} generated requests through the proxy`, async (t) => {
  const stack = await startStack(t);
  const { apiserver, pki } = stack;
  const strict = await startProxy([...proxyFlags(pki, { upstream: apiserver.url, usersFile: stack.usersFile }), '--allow-impersonation=false']);
  t.teardown(() => strict.stop());
  const proxies: Record<E2eCase['policy'], ProxyProcess> = { allow: stack.proxy, deny: strict };
  const upstreamHost = new URL(apiserver.url).host;
  // What the proxy must state as extra, by client certificate: the certificate's credential id.
  const extraFor: Record<Tls, Record<string, string[]>> = {
    none: {},
    'user-alice': credentialIdExtra(pki.pem['user-alice'].cert),
    'user-bob': credentialIdExtra(pki.pem['user-bob'].cert),
  };

  const generatedAt = performance.now();
  const cases = fc.sample(E2E_CASE, { seed: SEED, numRuns: E2E_REQUESTS });
  const generateMs = performance.now() - generatedAt;

  // Coverage of the generated requests: counted, printed, and the interesting ones required.
  const coverage = new Map<string, number>();
  for (const c of cases) for (const tag of c.tags) coverage.set(tag, (coverage.get(tag) ?? 0) + 1);
  t.comment(`generated ${cases.length} requests in ${Math.round(generateMs)} ms; coverage: ${[...coverage].map(([k, v]) => `${k}=${v}`).join(', ')}`);
  if (E2E_REQUESTS >= 5000) {
    for (const tag of [
      'x-remote-extra- (empty key)',
      'flood of 20+ identity/impersonation lines',
      'identity header repeated',
      'authorization repeated',
      'certificate + authorization',
      'impersonation repeated',
      'obs-text value',
      'tab inside a value',
      'empty value',
      'connection names a sent header',
      'chunked',
      'expect 100-continue',
      'connection: close',
      'near-miss name',
      'upgrade',
      'hostile',
      'policy:deny',
      'tls:none',
      'tls:user-bob',
    ]) {
      t.ok((coverage.get(tag) ?? 0) >= 50, `at least 50 generated requests with ${tag} (${coverage.get(tag) ?? 0})`);
    }
  }

  // Lanes: one per (proxy, client certificate), each worked by a few sequential keep-alive connections.
  const lanes = new Map<string, number[]>();
  cases.forEach((c, id) => {
    const key = `${c.policy}/${c.tls}`;
    const lane = lanes.get(key);
    if (lane) lane.push(id);
    else lanes.set(key, [id]);
  });
  const outcomes: Outcome[] = new Array(cases.length);
  let connectionsOpened = 0;
  const WORKERS_PER_LANE = 2;
  const started = performance.now();
  await Promise.all(
    [...lanes.values()].flatMap((queue) =>
      Array.from({ length: WORKERS_PER_LANE }, async () => {
        let connection: KeepAliveConnection | undefined;
        for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
          const c = cases[id]!;
          try {
            if (!connection || connection.closed) {
              connection = await KeepAliveConnection.open(proxies[c.policy].port, pki, c.tls === 'none' ? undefined : (c.tls as PkiName));
              connectionsOpened++;
            }
            const response = await connection.send(requestBytes(c, id));
            outcomes[id] = { id, response };
            if (/close/i.test(responseHeader(response, 'connection') ?? '')) {
              connection.close();
              connection = undefined;
            }
          } catch (err) {
            outcomes[id] = { id, error: (err as Error).message };
            connection?.close();
            connection = undefined;
          }
        }
        connection?.close();
      }),
    ),
  );
  const elapsedMs = performance.now() - started;

  // What the apiserver saw, by request id.
  const seen = new Map<number, SeenRequest[]>();
  for (const record of apiserver.requests) {
    const id = Number(/[?&]fuzz=(\d+)/.exec(record.url)?.[1] ?? -1);
    const list = seen.get(id);
    if (list) list.push(record);
    else seen.set(id, [record]);
  }

  const failures: string[] = [];
  let forwarded = 0;
  let refused = 0;
  let refused400 = 0;
  let wellFormed = 0;
  const fail = (id: number, problems: string[]) => {
    failures.push(`request ${id} (seed ${SEED}, ${cases[id]!.policy} proxy, tls ${cases[id]!.tls}) ${JSON.stringify(requestBytes(cases[id]!, id).toString('latin1'))}:\n  ${problems.join('\n  ')}`);
  };
  for (let id = 0; id < cases.length; id++) {
    const c = cases[id]!;
    const outcome = outcomes[id];
    const records = seen.get(id) ?? [];
    if (c.hostile === null) wellFormed++;
    if (records.length > 1) fail(id, [`reached the apiserver ${records.length} times`]);
    const response = outcome?.response;
    if (response?.statusCode === 200 && records.length === 1) {
      forwarded++;
      const problems = upstreamViolations(c, records[0]!, upstreamHost, extraFor[c.tls]);
      const body = JSON.parse(response.body.toString('utf8')) as { authn?: string; user?: { username?: string } };
      if (body.user?.username !== c.user.name) problems.push(`the client was answered for ${JSON.stringify(body.user)}`);
      if (problems.length > 0) fail(id, problems);
    } else if (c.hostile !== null && (response?.statusCode === 400 || outcome?.error !== undefined)) {
      refused++;
      if (response?.statusCode === 400) refused400++;
      if (records.length > 0) fail(id, [`refused (${response?.statusCode ?? outcome?.error}) yet it reached the apiserver`]);
      // The proxy's own parser refused it (its Status names the parse error), not an apiserver
      // that choked on something the proxy passed on.
      if (response && !/^malformed HTTP request \(HPE_/.test(jsonMessage(response))) fail(id, [`refused with ${JSON.stringify(response.body.toString('latin1').slice(0, 200))}, not by the proxy's parser`]);
    } else {
      fail(id, [`not forwarded as expected: ${response ? `${response.statusCode} ${response.body.toString('latin1').slice(0, 300)}` : outcome?.error}; apiserver records: ${records.length}`]);
    }
  }
  // The stand-in keeps the proxies' own requests (health checks, the requestheader ConfigMap
  // reads) apart: anything else it saw is a stray.
  const strays = (seen.get(-1) ?? []).map((r) => r.url);

  t.comment(
    `end to end: ${cases.length} requests in ${Math.round(elapsedMs)} ms (${Math.round((cases.length / elapsedMs) * 1000)}/s) over ${connectionsOpened} connections; forwarded and checked ${forwarded}, refused by the parser ${refused} (${refused400} with a 400, the rest by closing), well-formed ${wellFormed} (seed ${SEED})`,
  );
  t.same(strays, [], "the apiserver saw nothing but the cases (the proxies' own requests are kept apart)");
  t.ok(forwarded >= 0.9 * cases.length, `at least 90% of requests forwarded and checked end to end (${forwarded}/${cases.length})`);
  t.equal(forwarded, wellFormed, 'every well-formed request was forwarded');
  t.equal(failures.length, 0, `no request broke the contract (${failures.length} did)`);
  for (const failure of failures.slice(0, 8)) t.comment(failure);

  t.test('regression, end to end: a repeated "constructor" header named in Connection does not reach the apiserver', async (t) => {
    const connection = await KeepAliveConnection.open(stack.proxy.port, pki);
    const id = cases.length;
    const response = await connection.send(Buffer.from(`GET /test/identity?fuzz=${id} HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${basicAuth(ALICE)}\r\nConnection: constructor\r\nConstructor: a\r\nconstructor: b\r\n\r\n`, 'latin1'));
    connection.close();
    t.equal(response.statusCode, 200);
    const record = apiserver.requests.find((r) => r.url === `/test/identity?fuzz=${id}`);
    t.ok(record, 'forwarded');
    const leaked = record?.rawHeaders.filter(([name]) => name.toLowerCase() === 'constructor');
    t.same(leaked, [], `no "constructor" line upstream (got ${JSON.stringify(leaked)})`);
  });
});

// ---------------------------------------------------------------------------------------------
// Part 3b: the end-to-end oracle catches wrong upstream records.

t.test('the end-to-end oracle rejects upstream records that break the contract', async (t) => {
  const c: E2eCase = {
    policy: 'allow',
    tls: 'none',
    upgrade: false,
    lines: [
      { name: 'Host', value: 'localhost' },
      { name: 'Authorization', value: basicAuth(ALICE) },
      { name: 'X-Remote-User', value: 'root' },
      { name: 'x-remote-extra-', value: 'x' },
      { name: 'Impersonate-Group', value: 'a' },
      { name: 'IMPERSONATE-GROUP', value: ' b\xff' },
      { name: 'Accept', value: 'application/json' },
    ],
    chunked: false,
    hostile: null,
    hostileAt: 0,
    user: { name: 'alice', groups: ['devs', 'ops'] },
    tags: [],
  };
  const good: [string, string][] = [
    ['host', '127.0.0.1:6443'],
    ['connection', 'keep-alive'],
    ['impersonate-group', 'a'],
    ['impersonate-group', 'b\xff'],
    ['accept', 'application/json'],
    ['x-remote-user', 'alice'],
    ['x-remote-group', 'devs'],
    ['x-remote-group', 'ops'],
    ['x-forwarded-for', '127.0.0.1'],
  ];
  // Only what the oracle reads; the cast keeps this independent of fields added to SeenRequest later.
  const record = (rawHeaders: [string, string][]): SeenRequest =>
    ({
      method: 'GET',
      url: '/test/identity?fuzz=0',
      rawHeaders,
      authn: 'requestheader',
      user: { username: 'alice', groups: ['devs', 'ops', 'system:authenticated'], extra: {} },
      peerCN: 'front-proxy-client',
    }) as Partial<SeenRequest> as SeenRequest;
  t.same(upstreamViolations(c, record(good), '127.0.0.1:6443', {}), [], 'the correct record passes');
  const wrong: [string, [string, string][]][] = [
    ["a kept 'X-Remote-User '", [...good, ['X-Remote-User ', 'root']]],
    ["a kept 'x-remote-extra-'", [...good, ['x-remote-extra-', 'x']]],
    ['a second X-Remote-User', [...good, ['X-REMOTE-USER', 'root']]],
    ['a client group', [...good, ['x-remote-group', 'system:masters']]],
    ['a missing group', good.filter(([n, v]) => !(n === 'x-remote-group' && v === 'ops'))],
    ['X-Remote-Uid', [...good, ['x-remote-uid', '0']]],
    ['Authorization', [...good, ['authorization', basicAuth(ALICE)]]],
    ['the client X-Forwarded-For', [...good, ['x-forwarded-for', '203.0.113.9']]],
    ['impersonation joined', [...good.filter(([n]) => n !== 'impersonate-group'), ['impersonate-group', 'a, b\xff']]],
    ['impersonation re-encoded', [...good.filter(([n]) => n !== 'impersonate-group'), ['impersonate-group', 'a'], ['impersonate-group', 'b\xc3\xbf']]],
    ['a benign header lost', good.filter(([n]) => n !== 'accept')],
    ['a hop-by-hop header kept', [...good, ['keep-alive', 'timeout=5']]],
  ];
  for (const [what, rawHeaders] of wrong) t.not(upstreamViolations(c, record(rawHeaders), '127.0.0.1:6443', {}).length, 0, `caught: ${what}`);
  t.not(upstreamViolations({ ...c, policy: 'deny' }, record(good), '127.0.0.1:6443', {}).length, 0, 'caught: impersonation passed with the policy off');
});
