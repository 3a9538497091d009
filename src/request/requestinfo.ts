// Kubernetes request attributes (verb, group, version, namespace, resource, subresource, name),
// derived from an HTTP method and request-target exactly as kube-apiserver does it:
// k8s.io/apiserver pkg/endpoints/request/requestinfo.go, RequestInfoFactory.NewRequestInfo
// (v1.32, i.e. k8s.io/apiserver v0.32.x; the file is identical from v0.32.0 to v0.32.9), configured
// the way kube-apiserver configures it (server.NewRequestInfoResolver): API prefixes "api" and
// "apis", of which "api" is groupless.
//
// Kept on purpose, because they are the apiserver's semantics (and so what RBAC and audit see):
//  - There is no "connect" verb here. pods/exec, pods/attach, pods/portforward and .../proxy are
//    plain subresources and the verb comes from the method: POST -> "create", GET -> "get".
//    (The authorizer's RBAC mapping of those to "create"/"get" is the same thing.) The verb
//    "proxy" only appears for the deprecated path prefix /api/v1/proxy/..., and "watch" from the
//    path only for the deprecated prefix /api/v1/watch/... .
//  - The verb for resource requests comes from the method, case-sensitively: POST create,
//    GET/HEAD get, PUT update, PATCH patch, DELETE delete, anything else (OPTIONS, ...) "".
//    Non-resource requests get the lowercased method.
//  - "get" without a name becomes "list", or "watch" when the first `watch` query value is
//    anything except "0" or "false" (case-insensitive). That is apimachinery's
//    Convert_Slice_string_To_bool, NOT strconv.ParseBool: `?watch=`, `?watch` and `?watch=no`
//    all mean watch.
//  - For that list/watch, a fieldSelector requiring `metadata.name=X` (or `==`) supplies the
//    name, provided the whole ListOptions decode succeeds (labelSelector, fieldSelector,
//    timeoutSeconds and limit all parse) and X is a valid path segment name. If the decode fails
//    the apiserver still honours `watch` but drops the name. The legacy /watch/ prefix never
//    takes a name from the query.
//  - "delete" without a name becomes "deletecollection".
//  - A namespace addressed as an object (/api/v1/namespaces/foo, .../foo/status, .../foo/finalize)
//    has namespace "foo" as well as resource "namespaces" and name "foo".
//  - The path is percent-decoded BEFORE it is split, as Go's URL.Path is, so an encoded slash
//    (%2F) separates segments.
//
// Where this differs from the apiserver, it is because the apiserver never gets that far:
//  - A path with a malformed percent-escape (`%zz`, a trailing `%`) is rejected by Go's HTTP
//    server with 400 before any RequestInfo exists. Here it is parsed undecoded, as a best effort,
//    so that the access log still says what was asked for.
//  - A bare `/api/v1/watch` or `/api/v1/proxy` (special verb with nothing after it) is an error in
//    NewRequestInfo, and the apiserver answers 500. Here it yields what NewRequestInfo had filled
//    in by then: a resource request with group and version, an empty resource, and the lowercased
//    method as verb.
//  - Go keeps decoded bytes that are not UTF-8 as they are. A JS string can't, so such bytes
//    decode to U+FFFD. Nothing the apiserver compares against (api, apis, namespaces, watch,
//    proxy, status, finalize, metadata.name, 0, false) is affected.
//
// Not modelled: the RequestInfo.FieldSelector/LabelSelector copies (AuthorizeWithSelectors),
// APIPrefix and Parts.
//
// Hot-path notes: no regular expression runs per request. The path is trimmed once and split once,
// with a limit of the nine segments the algorithm can look at. Percent-decoding happens only when
// there is a '%'. The query is looked at only for a name-less GET, and scanned only if it could
// contain a `watch` or `fieldSelector` key. The selector parsers run only when a fieldSelector is
// actually present.

export interface RequestInfo {
  isResourceRequest: boolean;
  /** get, list, watch, create, update, patch, delete, deletecollection, proxy, '' (unknown method
   *  on a resource), or the lowercased method for non-resource requests */
  verb: string;
  /** '' for the core group (/api) */
  apiGroup: string;
  apiVersion: string;
  namespace: string;
  resource: string;
  subresource: string;
  name: string;
  /** the path without the query, percent-decoded as Go's URL.Path is (undecoded when malformed) */
  path: string;
}

/**
 * Derives the Kubernetes request attributes of one request the way kube-apiserver's
 * RequestInfoFactory does. `url` is the request-target as received (Node's `req.url`): path plus
 * raw query; the absolute form (`https://host/path?q`) is accepted too. Never throws.
 */
export function requestInfo(method: string, url: string): RequestInfo {
  try {
    return resolve(typeof method === 'string' ? method : '', typeof url === 'string' ? url : '');
  } catch {
    // Defence in depth only: nothing in resolve() is expected to throw.
    return nonResource(typeof method === 'string' ? lowerMethod(method) : '', '');
  }
}

// The most segments resolve() ever reads: prefix, group, version, special verb, "namespaces",
// namespace, resource, name, subresource. Every length test it does compares against a count that
// fits inside this limit, so a longer path needs no further splitting.
const MAX_SEGMENTS = 9;

function resolve(method: string, url: string): RequestInfo {
  const q = url.indexOf('?');
  const target = q < 0 ? url : url.slice(0, q);
  const rawQuery = q < 0 ? '' : url.slice(q + 1);

  let rawPath: string;
  if (target.charCodeAt(0) === 47 /* / */) {
    rawPath = target; // origin-form: the usual case
  } else {
    // Go's ReadRequest reads a CONNECT target that isn't a path as an authority ("http://" + it).
    const p = absoluteFormPath(method === 'CONNECT' ? `http://${target}` : target);
    // "*" (OPTIONS *), authority-form and anything else: never a resource request.
    if (p === null) return nonResource(lowerMethod(method), target);
    rawPath = p;
  }

  // Go's URL.Path: percent-decoded (and only percent: '+' stays '+' in a path).
  const path = rawPath.indexOf('%') < 0 ? rawPath : (goUnescape(rawPath, false) ?? rawPath);

  // splitPath: strings.Trim(path, "/") then strings.Split(path, "/").
  const trimmed = trimSlashes(path);
  const parts = trimmed === '' ? EMPTY : trimmed.split('/', MAX_SEGMENTS);
  const n = parts.length;

  if (n < 3) return nonResource(lowerMethod(method), path);
  const prefix = parts[0];
  if (prefix !== 'api' && prefix !== 'apis') return nonResource(lowerMethod(method), path);
  let i = 1;
  let apiGroup = '';
  if (prefix === 'apis') {
    // one part (the prefix) is consumed, so this is "do we have four parts?"
    if (n - i < 3) return nonResource(lowerMethod(method), path);
    apiGroup = seg(parts, i);
    i++;
  }
  const apiVersion = seg(parts, i);
  i++;

  // handle input of form /{specialVerb}/*
  let verb: string;
  const special = seg(parts, i);
  if (special === 'proxy' || special === 'watch') {
    if (n - i < 2) {
      // NewRequestInfo returns an error here ("unable to determine kind and namespace from url")
      // and the apiserver answers 500; this is the info as filled in up to that point.
      return {
        isResourceRequest: true,
        verb: lowerMethod(method),
        apiGroup,
        apiVersion,
        namespace: '',
        resource: '',
        subresource: '',
        name: '',
        path,
      };
    }
    verb = special;
    i++;
  } else {
    verb = resourceVerb(method);
  }

  // URL forms: /namespaces/{namespace}/{kind}/*, where parts are adjusted to be relative to kind
  let namespace = '';
  if (seg(parts, i) === 'namespaces' && n - i > 1) {
    namespace = seg(parts, i + 1);
    // if there is another step after the namespace name and it is not a known namespace
    // subresource (status, finalize), the step is a resource in its own right
    if (n - i > 2) {
      const next = seg(parts, i + 2);
      if (next !== 'status' && next !== 'finalize') i += 2;
    }
  }

  // parts look like: resource/resourceName/subresource/other/stuff/we/don't/interpret
  const rem = n - i;
  const subresource = rem >= 3 && verb !== 'proxy' ? seg(parts, i + 2) : '';
  let name = rem >= 2 ? seg(parts, i + 1) : '';
  const resource = rem >= 1 ? seg(parts, i) : '';

  // no name and a get: it's really a list or a watch
  if (name === '' && verb === 'get') {
    const lw = listOrWatch(rawQuery);
    verb = lw.watch ? 'watch' : 'list';
    if (lw.name !== null) name = lw.name;
  }
  // no name and a delete: it's really a deletecollection
  if (name === '' && verb === 'delete') verb = 'deletecollection';

  return { isResourceRequest: true, verb, apiGroup, apiVersion, namespace, resource, subresource, name, path };
}

const EMPTY: string[] = [];

function seg(parts: string[], i: number): string {
  return parts[i] ?? '';
}

function nonResource(verb: string, path: string): RequestInfo {
  return {
    isResourceRequest: false,
    verb,
    apiGroup: '',
    apiVersion: '',
    namespace: '',
    resource: '',
    subresource: '',
    name: '',
    path,
  };
}

function trimSlashes(p: string): string {
  let s = 0;
  let e = p.length;
  while (s < e && p.charCodeAt(s) === 47) s++;
  while (e > s && p.charCodeAt(e - 1) === 47) e--;
  return s === 0 && e === p.length ? p : p.slice(s, e);
}

/** strings.ToLower(req.Method), without allocating for the usual methods. */
function lowerMethod(m: string): string {
  switch (m) {
    case 'GET':
      return 'get';
    case 'POST':
      return 'post';
    case 'PUT':
      return 'put';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return 'delete';
    case 'HEAD':
      return 'head';
    case 'OPTIONS':
      return 'options';
    default:
      return m.toLowerCase();
  }
}

/** The method-to-verb switch of NewRequestInfo (case-sensitive, as Go's is). */
function resourceVerb(m: string): string {
  switch (m) {
    case 'POST':
      return 'create';
    case 'GET':
    case 'HEAD':
      return 'get';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return 'delete';
    default:
      return '';
  }
}

/**
 * The path of an absolute-form request-target (Go's url.ParseRequestURI: scheme ":" then, after
 * "//authority", the path; a rootless rest is opaque, Path ""). null when it is no absolute URI
 * ("*", authority-form, garbage), which Go either rejects or gives a path of one segment.
 */
function absoluteFormPath(t: string): string | null {
  // getScheme: [A-Za-z][A-Za-z0-9+.-]* ":"
  let i = 0;
  for (; i < t.length; i++) {
    const c = t.charCodeAt(i);
    const alpha = (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
    if (alpha) continue;
    if ((c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46) {
      if (i === 0) return null;
      continue;
    }
    if (c === 58 /* : */ && i > 0) break;
    return null;
  }
  if (i >= t.length) return null;
  const rest = t.slice(i + 1);
  if (rest.startsWith('//')) {
    const slash = rest.indexOf('/', 2);
    return slash < 0 ? '' : rest.slice(slash);
  }
  return rest.charCodeAt(0) === 47 ? rest : '';
}

// ---------------------------------------------------------------------------------------------
// Percent-decoding as Go's net/url does it.

const utf8 = new TextDecoder(); // not fatal: bytes that aren't UTF-8 become U+FFFD

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1; // also for NaN (past the end)
}

/**
 * Go's url.unescape: in a path (query=false) only %XX is decoded, in a query component
 * (query=true, url.QueryUnescape) '+' is a space too. A '%' not followed by two hex digits makes
 * the whole string invalid: null.
 */
function goUnescape(s: string, query: boolean): string | null {
  if (s.indexOf('%') < 0) {
    return query && s.indexOf('+') >= 0 ? s.replaceAll('+', ' ') : s;
  }
  let out = '';
  let lit = 0; // start of the pending literal run
  let i = 0;
  const n = s.length;
  while (i < n) {
    if (s.charCodeAt(i) !== 37 /* % */) {
      i++;
      continue;
    }
    if (lit < i) out += literal(s.slice(lit, i), query);
    // a run of consecutive escapes is decoded as one UTF-8 byte sequence
    const bytes: number[] = [];
    while (i < n && s.charCodeAt(i) === 37) {
      const h = hexVal(s.charCodeAt(i + 1));
      const l = hexVal(s.charCodeAt(i + 2));
      if (h < 0 || l < 0) return null;
      bytes.push(h * 16 + l);
      i += 3;
    }
    out += utf8.decode(new Uint8Array(bytes));
    lit = i;
  }
  if (lit < n) out += literal(s.slice(lit), query);
  return out;
}

function literal(s: string, query: boolean): string {
  return query && s.indexOf('+') >= 0 ? s.replaceAll('+', ' ') : s;
}

// ---------------------------------------------------------------------------------------------
// list vs watch, and the name from a fieldSelector.

interface ListOrWatch {
  watch: boolean;
  name: string | null;
}

const LIST: ListOrWatch = { watch: false, name: null };
const WATCH: ListOrWatch = { watch: true, name: null };

/**
 * The `len(Name) == 0 && Verb == "get"` branch of NewRequestInfo: DecodeParameters into
 * metainternalversion.ListOptions. On success, Watch and the fieldSelector's metadata.name are
 * used. On failure the apiserver falls back to reading `watch` alone (strings.ToLower(v) not
 * "false"/"0"), and there is no name.
 */
function listOrWatch(rawQuery: string): ListOrWatch {
  if (rawQuery === '') return LIST;
  // Without a '%', decoding can't conjure the key `watch` or `fieldSelector` out of other text
  // ('+' only becomes a space), so a query containing neither is a plain list.
  if (rawQuery.indexOf('%') < 0 && rawQuery.indexOf('watch') < 0 && rawQuery.indexOf('fieldSelector') < 0) {
    return LIST;
  }

  const v = firstValues(rawQuery);
  if (v.watch === null && v.fieldSelector === null) return LIST;

  // Convert_Slice_string_To_bool (the successful decode) vs. the fallback's strings.ToLower:
  // they differ only for a `watch` spelt with U+017F (ſ), which EqualFold takes for 's'.
  const watchIfDecoded = v.watch !== null && !(v.watch === '0' || equalFoldFalse(v.watch));
  const watchIfNot = v.watch !== null && !(v.watch === '0' || asciiLowerIs(v.watch, 'false'));
  if (v.fieldSelector === null && watchIfDecoded === watchIfNot) return watchIfDecoded ? WATCH : LIST;

  if (!listOptionsDecode(v)) return watchIfNot ? WATCH : LIST;
  let name: string | null = null;
  if (v.fieldSelector !== null) {
    const sel = fieldSelectorName(v.fieldSelector);
    // RequiresExactMatch("metadata.name"), then path.IsValidPathSegmentName
    if (typeof sel === 'string' && isValidPathSegmentName(sel)) name = sel;
  }
  return { watch: watchIfDecoded, name };
}

interface QueryValues {
  watch: string | null;
  fieldSelector: string | null;
  labelSelector: string | null;
  timeoutSeconds: string | null;
  limit: string | null;
}

/**
 * The first value of each ListOptions key that can matter, as Go's url.ParseQuery gives it:
 * pairs separated by '&'; a pair containing ';' is dropped (Go >= 1.17); an empty pair is
 * skipped; key and value split at the first '='; a pair whose key or value has a malformed escape
 * is dropped.
 */
function firstValues(raw: string): QueryValues {
  const v: QueryValues = { watch: null, fieldSelector: null, labelSelector: null, timeoutSeconds: null, limit: null };
  let start = 0;
  const n = raw.length;
  while (start <= n) {
    let end = raw.indexOf('&', start);
    if (end < 0) end = n;
    if (end > start) {
      const pair = raw.slice(start, end);
      if (pair.indexOf(';') < 0) {
        const eq = pair.indexOf('=');
        const key = goUnescape(eq < 0 ? pair : pair.slice(0, eq), true);
        if (key !== null) {
          switch (key) {
            case 'watch':
            case 'fieldSelector':
            case 'labelSelector':
            case 'timeoutSeconds':
            case 'limit':
              if (v[key] === null) v[key] = goUnescape(eq < 0 ? '' : pair.slice(eq + 1), true);
              break;
          }
        }
      }
    }
    start = end + 1;
  }
  return v;
}

/** Does DecodeParameters(query, meta.k8s.io/v1, &internalversion.ListOptions{}) succeed? */
function listOptionsDecode(v: QueryValues): boolean {
  // url.Values -> v1.ListOptions: only the int64 fields can fail (bools and strings can't).
  if (v.timeoutSeconds !== null && !isInt64(v.timeoutSeconds)) return false;
  if (v.limit !== null && !isInt64(v.limit)) return false;
  // v1 -> internal: labels.Parse and fields.ParseSelector (of "" when absent, which succeed).
  if (v.labelSelector !== null && !labelSelectorValid(v.labelSelector)) return false;
  if (v.fieldSelector !== null && fieldSelectorName(v.fieldSelector) === undefined) return false;
  return true;
}

/** strings.EqualFold(s, "false"): ASCII case-insensitive, plus U+017F (ſ) folding to 's'. */
function equalFoldFalse(s: string): boolean {
  if (s.length !== 5) return false;
  const t = 'false';
  for (let i = 0; i < 5; i++) {
    const c = s.charCodeAt(i);
    const want = t.charCodeAt(i);
    if ((c | 0x20) === want && ((c >= 65 && c <= 90) || (c >= 97 && c <= 122))) continue;
    if (want === 115 /* s */ && c === 0x17f) continue;
    return false;
  }
  return true;
}

/** s lowercased (ASCII only) equals the lowercase ASCII word w. */
function asciiLowerIs(s: string, w: string): boolean {
  if (s.length !== w.length) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const lc = c >= 65 && c <= 90 ? c + 32 : c;
    if (lc !== w.charCodeAt(i)) return false;
  }
  return true;
}

/** strconv.ParseInt(s, 10, 64) succeeds. */
function isInt64(s: string): boolean {
  let i = 0;
  let neg = false;
  const c0 = s.charCodeAt(0);
  if (c0 === 43 /* + */ || c0 === 45 /* - */) {
    neg = c0 === 45;
    i = 1;
  }
  if (i >= s.length) return false;
  for (let j = i; j < s.length; j++) {
    const c = s.charCodeAt(j);
    if (c < 48 || c > 57) return false;
  }
  while (i < s.length - 1 && s.charCodeAt(i) === 48) i++;
  const digits = s.length - i;
  if (digits !== 19) return digits < 19;
  return s.slice(i) <= (neg ? '9223372036854775808' : '9223372036854775807');
}

/** path.IsValidPathSegmentName: not "." or "..", and no '/' or '%'. */
function isValidPathSegmentName(name: string): boolean {
  return name !== '.' && name !== '..' && name.indexOf('/') < 0 && name.indexOf('%') < 0;
}

// ---------------------------------------------------------------------------------------------
// fields.ParseSelector + RequiresExactMatch("metadata.name").

/**
 * undefined: the selector does not parse. null: it parses but requires no exact metadata.name.
 * string: the required name, from the first `metadata.name=`/`==` term in sorted order (Go sorts
 * the terms before building the selector).
 */
function fieldSelectorName(sel: string): string | null | undefined {
  if (sel === '') return null;
  let best: string | null = null;
  let bestTerm: string | null = null;
  // splitTerms: split on unescaped ','; a backslash escapes the next character
  let start = 0;
  let inSlash = false;
  for (let i = 0; i <= sel.length; i++) {
    if (i < sel.length) {
      const c = sel.charCodeAt(i);
      if (inSlash) {
        inSlash = false;
        continue;
      }
      if (c === 92 /* \ */) {
        inSlash = true;
        continue;
      }
      if (c !== 44 /* , */) continue;
    }
    const term = sel.slice(start, i);
    start = i + 1;
    if (term === '') continue;
    // splitTerm: the first position where "!=", "==" or "=" (in that order) starts
    let op = 0; // 1 "!=", 2 "==", 3 "="
    let at = 0;
    for (; at < term.length; at++) {
      const c = term.charCodeAt(at);
      if (c === 33 /* ! */ && term.charCodeAt(at + 1) === 61) op = 1;
      else if (c === 61 /* = */) op = term.charCodeAt(at + 1) === 61 ? 2 : 3;
      if (op !== 0) break;
    }
    if (op === 0) return undefined;
    const value = unescapeFieldValue(term.slice(at + (op === 3 ? 1 : 2)));
    if (value === null) return undefined;
    if (op !== 1 && at === 13 && term.startsWith('metadata.name')) {
      if (bestTerm === null || compareCodePoints(term, bestTerm) < 0) {
        bestTerm = term;
        best = value;
      }
    }
  }
  return best;
}

/** fields.UnescapeValue: `\\`, `\,`, `\=` are escapes; any other escape, or a bare ',' or '=', is an error. */
function unescapeFieldValue(s: string): string | null {
  if (s.indexOf('\\') < 0 && s.indexOf(',') < 0 && s.indexOf('=') < 0) return s;
  let out = '';
  let inSlash = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (inSlash) {
      if (c !== 92 && c !== 44 && c !== 61) return null;
      out += s[i];
      inSlash = false;
    } else if (c === 92) {
      inSlash = true;
    } else if (c === 44 || c === 61) {
      return null;
    } else {
      out += s[i];
    }
  }
  return inSlash ? null : out;
}

/** Go's byte-wise string order is code point order; JS's default compares UTF-16 units. */
function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return rankUnit(x) - rankUnit(y);
  }
  return a.length - b.length;
}

function rankUnit(c: number): number {
  // surrogates (astral code points) sort after U+E000..U+FFFF
  if (c >= 0xd800 && c <= 0xdfff) return c + 0x2000;
  if (c >= 0xe000) return c - 0x800;
  return c;
}

// ---------------------------------------------------------------------------------------------
// labels.Parse, for validity only (its lexer, parser and NewRequirement's checks).

const T_ERROR = 0;
const T_EOS = 1;
const T_CLOSE = 2;
const T_COMMA = 3;
const T_NOT = 4; // "!" (DoesNotExist)
const T_DEQ = 5;
const T_EQ = 6;
const T_GT = 7;
const T_ID = 8;
const T_IN = 9;
const T_LT = 10;
const T_NEQ = 11;
const T_NOTIN = 12;
const T_OPEN = 13;

function symbolToken(s: string): number {
  switch (s) {
    case ')':
      return T_CLOSE;
    case ',':
      return T_COMMA;
    case '!':
      return T_NOT;
    case '==':
      return T_DEQ;
    case '=':
      return T_EQ;
    case '>':
      return T_GT;
    case '<':
      return T_LT;
    case '!=':
      return T_NEQ;
    case '(':
      return T_OPEN;
    default:
      return T_ERROR;
  }
}

function isLabelWhitespace(c: number): boolean {
  return c === 32 || c === 9 || c === 13 || c === 10;
}

function isLabelSpecial(c: number): boolean {
  return c === 61 || c === 33 || c === 40 || c === 41 || c === 44 || c === 62 || c === 60;
}

/** The label selector lexer. Like Go's, it reads a NUL as "end" (and steps over it). */
function lexLabels(s: string, toks: number[], lits: string[]): void {
  const n = s.length;
  let pos = 0;
  const read = (): number => (pos < n ? s.charCodeAt(pos++) : 0);
  for (;;) {
    let ch = read();
    while (isLabelWhitespace(ch)) ch = read();
    if (ch === 0) {
      toks.push(T_EOS);
      lits.push('');
      return;
    }
    pos--;
    const from = pos;
    if (isLabelSpecial(ch)) {
      // scanSpecialSymbol: the longest run of special characters that is still a token
      let buf = '';
      let lastTok = T_ERROR;
      let lastLit = '';
      for (;;) {
        const c = read();
        if (c === 0) break;
        if (!isLabelSpecial(c)) {
          pos--;
          break;
        }
        buf += String.fromCharCode(c);
        const t = symbolToken(buf);
        if (t !== T_ERROR) {
          lastTok = t;
          lastLit = buf;
        } else if (lastTok !== T_ERROR) {
          pos--;
          break;
        }
      }
      toks.push(lastTok);
      lits.push(lastLit);
    } else {
      // scanIDOrKeyword
      let end = from;
      for (;;) {
        const c = read();
        if (c === 0) break;
        if (isLabelSpecial(c) || isLabelWhitespace(c)) {
          pos--;
          break;
        }
        end = pos;
      }
      const lit = s.slice(from, end);
      toks.push(lit === 'in' ? T_IN : lit === 'notin' ? T_NOTIN : T_ID);
      lits.push(lit);
    }
  }
}

function labelSelectorValid(s: string): boolean {
  const toks: number[] = [];
  const lits: string[] = [];
  lexLabels(s, toks, lits);
  let p = 0;
  // Values context: "in" and "notin" are identifiers
  const look = (values: boolean): number => {
    const t = toks[p] ?? T_EOS;
    return values && (t === T_IN || t === T_NOTIN) ? T_ID : t;
  };
  const take = (values: boolean): number => {
    const t = look(values);
    p++;
    return t;
  };
  const lit = (): string => lits[p - 1] ?? '';

  const parseRequirement = (): boolean => {
    // parseKeyAndInferOperator
    let unary = false; // DoesNotExist
    let t = take(true);
    if (t === T_NOT) {
      unary = true;
      t = take(true);
    }
    if (t !== T_ID || !isQualifiedName(lit())) return false;
    const la = look(true);
    if (unary || la === T_EOS || la === T_COMMA) return true; // Exists / DoesNotExist: no values
    // parseOperator
    const op = take(false);
    const values: string[] = [];
    if (op === T_IN || op === T_NOTIN) {
      // parseValues
      if (take(true) !== T_OPEN) return false;
      const first = look(true);
      if (first === T_ID || first === T_COMMA) {
        // parseIdentifiersList
        for (let done = false; !done;) {
          const it = take(true);
          if (it === T_ID) {
            values.push(lit());
            const t2 = look(true);
            if (t2 === T_CLOSE) done = true;
            else if (t2 !== T_COMMA) return false;
          } else if (it === T_COMMA) {
            if (values.length === 0) values.push('');
            const t2 = look(true);
            if (t2 === T_CLOSE) {
              values.push('');
              done = true;
            } else if (t2 === T_COMMA) {
              take(true);
              values.push('');
            }
          } else {
            return false;
          }
        }
        if (take(true) !== T_CLOSE) return false;
      } else if (first === T_CLOSE) {
        take(true);
        values.push('');
      } else {
        return false;
      }
    } else if (op === T_EQ || op === T_DEQ || op === T_NEQ || op === T_GT || op === T_LT) {
      // parseExactValue
      const la2 = look(true);
      if (la2 === T_EOS || la2 === T_COMMA) values.push('');
      else if (take(true) === T_ID) values.push(lit());
      else return false;
      if ((op === T_GT || op === T_LT) && !isInt64(values[0] ?? '')) return false;
    } else {
      return false;
    }
    // NewRequirement: every value must be a valid label value
    for (const v of values) if (!isLabelValue(v)) return false;
    return true;
  };

  for (;;) {
    const t = look(true);
    if (t === T_EOS) return true;
    if (t !== T_ID && t !== T_NOT) return false;
    if (!parseRequirement()) return false;
    const after = take(true);
    if (after === T_EOS) return true;
    if (after !== T_COMMA) return false;
    const t2 = look(true);
    if (t2 !== T_ID && t2 !== T_NOT) return false;
  }
}

// validation.IsQualifiedName / IsValidLabelValue / IsDNS1123Subdomain. Only reached when a
// request carries both a labelSelector and a fieldSelector, never on the common path.
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function isQualifiedName(k: string): boolean {
  const slash = k.indexOf('/');
  let name = k;
  if (slash >= 0) {
    if (k.indexOf('/', slash + 1) >= 0) return false;
    const prefix = k.slice(0, slash);
    if (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix)) return false;
    name = k.slice(slash + 1);
  }
  return name.length > 0 && name.length <= 63 && QUALIFIED_NAME.test(name);
}

function isLabelValue(v: string): boolean {
  return v.length <= 63 && (v === '' || QUALIFIED_NAME.test(v));
}
