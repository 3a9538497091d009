// requestInfo() against kube-apiserver's RequestInfoFactory (k8s.io/apiserver v0.32.x,
// pkg/endpoints/request/requestinfo.go). The expected values were worked out from that source
// (and the apimachinery pieces it calls: url.ParseQuery, Convert_Slice_string_To_bool,
// fields.ParseSelector, labels.Parse, path.IsValidPathSegmentName), not from the implementation.
// Rows marked "best effort" are requests the apiserver never builds a RequestInfo for.
import t from 'tap';
import { requestInfo, type RequestInfo } from '../src/request/requestinfo.js';

/** `path` left out means: the url without its query. */
type Want = Omit<RequestInfo, 'path'> & { path?: string };
type Row = [method: string, url: string, want: Want];

/** A resource request. `path` defaults to the url without its query. */
function res(verb: string, apiGroup: string, apiVersion: string, namespace: string, resource: string, subresource: string, name: string, path?: string): Want {
  return { isResourceRequest: true, verb, apiGroup, apiVersion, namespace, resource, subresource, name, ...(path === undefined ? {} : { path }) };
}

function nonres(verb: string, path?: string): Want {
  return {
    isResourceRequest: false,
    verb,
    apiGroup: '',
    apiVersion: '',
    namespace: '',
    resource: '',
    subresource: '',
    name: '',
    ...(path === undefined ? {} : { path }),
  };
}

const RBAC = 'rbac.authorization.k8s.io';
const longName = 'a'.repeat(10_000);
const manySegments = '/x'.repeat(5_000);

const rows: Row[] = [
  // --- core group, namespaced: list vs get ---
  ['GET', '/api/v1/namespaces/default/pods', res('list', '', 'v1', 'default', 'pods', '', '')],
  ['GET', '/api/v1/namespaces/default/pods/nginx', res('get', '', 'v1', 'default', 'pods', '', 'nginx')],
  ['HEAD', '/api/v1/namespaces/default/pods/nginx', res('get', '', 'v1', 'default', 'pods', '', 'nginx')],
  ['HEAD', '/api/v1/pods', res('list', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?limit=500', res('list', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods/', res('list', '', 'v1', '', 'pods', '', '')], // splitPath trims slashes

  // --- watch from the query: anything but "0" / "false" (any case) is true ---
  ['GET', '/api/v1/namespaces/default/pods?watch=true', res('watch', '', 'v1', 'default', 'pods', '', '')],
  ['GET', '/api/v1/namespaces/default/pods?watch=1', res('watch', '', 'v1', 'default', 'pods', '', '')],
  ['GET', '/api/v1/namespaces/default/pods?watch=false', res('list', '', 'v1', 'default', 'pods', '', '')],
  ['GET', '/api/v1/namespaces/default/pods?watch=0', res('list', '', 'v1', 'default', 'pods', '', '')],
  ['GET', '/api/v1/pods?watch=FALSE', res('list', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?watch=yes', res('watch', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?watch=', res('watch', '', 'v1', '', 'pods', '', '')], // "" is true
  ['GET', '/api/v1/pods?watch', res('watch', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?watch=false&watch=true', res('list', '', 'v1', '', 'pods', '', '')], // first value
  ['GET', '/api/v1/pods?%77atch=1', res('watch', '', 'v1', '', 'pods', '', '')], // keys are unescaped
  ['GET', '/api/v1/namespaces/default/pods/nginx?watch=true', res('get', '', 'v1', 'default', 'pods', '', 'nginx')],
  ['GET', '/apis/apps/v1/deployments?watch=true', res('watch', 'apps', 'v1', '', 'deployments', '', '')],

  // --- legacy /watch/ path prefix ---
  ['GET', '/api/v1/watch/namespaces/kube-system/pods', res('watch', '', 'v1', 'kube-system', 'pods', '', '')],
  ['GET', '/api/v1/watch/pods', res('watch', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/watch/namespaces/kube-system/pods/coredns', res('watch', '', 'v1', 'kube-system', 'pods', '', 'coredns')],
  ['GET', '/apis/apps/v1/watch/namespaces/x/deployments', res('watch', 'apps', 'v1', 'x', 'deployments', '', '')],
  ['GET', '/api/v1/watch/namespaces/x/pods?watch=false', res('watch', '', 'v1', 'x', 'pods', '', '')],
  // the get->list/watch branch is never entered, so the fieldSelector supplies no name
  ['GET', '/api/v1/watch/namespaces/x/pods?fieldSelector=metadata.name%3Dfoo', res('watch', '', 'v1', 'x', 'pods', '', '')],
  // special verb with nothing after it: NewRequestInfo errors (apiserver: 500); info as filled so far
  ['GET', '/api/v1/watch', res('get', '', 'v1', '', '', '', '')],

  // --- cluster-scoped ---
  ['GET', '/api/v1/nodes', res('list', '', 'v1', '', 'nodes', '', '')],
  ['GET', '/api/v1/nodes/node-1', res('get', '', 'v1', '', 'nodes', '', 'node-1')],
  ['GET', `/apis/${RBAC}/v1/clusterroles`, res('list', RBAC, 'v1', '', 'clusterroles', '', '')],
  ['GET', `/apis/${RBAC}/v1/clusterroles/admin`, res('get', RBAC, 'v1', '', 'clusterroles', '', 'admin')],
  ['DELETE', '/api/v1/nodes', res('deletecollection', '', 'v1', '', 'nodes', '', '')],

  // --- namespaces as a resource: the namespace of a namespace is itself ---
  ['GET', '/api/v1/namespaces', res('list', '', 'v1', '', 'namespaces', '', '')],
  ['POST', '/api/v1/namespaces', res('create', '', 'v1', '', 'namespaces', '', '')],
  ['GET', '/api/v1/namespaces/kube-system', res('get', '', 'v1', 'kube-system', 'namespaces', '', 'kube-system')],
  ['GET', '/api/v1/namespaces/x/', res('get', '', 'v1', 'x', 'namespaces', '', 'x')],
  ['DELETE', '/api/v1/namespaces/dev', res('delete', '', 'v1', 'dev', 'namespaces', '', 'dev')],
  ['PUT', '/api/v1/namespaces/dev/finalize', res('update', '', 'v1', 'dev', 'namespaces', 'finalize', 'dev')],
  ['PATCH', '/api/v1/namespaces/dev/status', res('patch', '', 'v1', 'dev', 'namespaces', 'status', 'dev')],

  // --- named groups: create / update / patch / delete / deletecollection ---
  ['GET', '/apis/apps/v1/namespaces/default/deployments', res('list', 'apps', 'v1', 'default', 'deployments', '', '')],
  ['POST', '/apis/apps/v1/namespaces/default/deployments', res('create', 'apps', 'v1', 'default', 'deployments', '', '')],
  ['PUT', '/apis/apps/v1/namespaces/default/deployments/web', res('update', 'apps', 'v1', 'default', 'deployments', '', 'web')],
  ['PATCH', '/apis/apps/v1/namespaces/default/deployments/web', res('patch', 'apps', 'v1', 'default', 'deployments', '', 'web')],
  ['DELETE', '/apis/apps/v1/namespaces/default/deployments/web', res('delete', 'apps', 'v1', 'default', 'deployments', '', 'web')],
  ['DELETE', '/apis/apps/v1/namespaces/default/deployments', res('deletecollection', 'apps', 'v1', 'default', 'deployments', '', '')],
  ['POST', '/apis/batch/v1beta1/namespaces/ci/cronjobs', res('create', 'batch', 'v1beta1', 'ci', 'cronjobs', '', '')],
  // a method with no kube verb: "" (and no list/deletecollection rewriting)
  ['OPTIONS', '/api/v1/pods', res('', '', 'v1', '', 'pods', '', '')],

  // --- subresources: no "connect" verb, the method decides ---
  ['GET', '/api/v1/namespaces/default/pods/nginx/log?follow=true&container=app', res('get', '', 'v1', 'default', 'pods', 'log', 'nginx')],
  ['POST', '/api/v1/namespaces/default/pods/nginx/exec?command=sh&stdin=true&tty=true', res('create', '', 'v1', 'default', 'pods', 'exec', 'nginx')],
  ['GET', '/api/v1/namespaces/default/pods/nginx/exec?command=ls&stdout=true', res('get', '', 'v1', 'default', 'pods', 'exec', 'nginx')],
  ['POST', '/api/v1/namespaces/default/pods/nginx/attach?stdout=true', res('create', '', 'v1', 'default', 'pods', 'attach', 'nginx')],
  ['POST', '/api/v1/namespaces/default/pods/nginx/portforward', res('create', '', 'v1', 'default', 'pods', 'portforward', 'nginx')],
  ['GET', '/api/v1/namespaces/default/pods/nginx/portforward?ports=8080', res('get', '', 'v1', 'default', 'pods', 'portforward', 'nginx')],
  ['PUT', '/api/v1/namespaces/default/pods/nginx/status', res('update', '', 'v1', 'default', 'pods', 'status', 'nginx')],
  ['POST', '/api/v1/namespaces/default/pods/nginx/eviction', res('create', '', 'v1', 'default', 'pods', 'eviction', 'nginx')],
  ['GET', '/apis/apps/v1/namespaces/default/deployments/web/scale', res('get', 'apps', 'v1', 'default', 'deployments', 'scale', 'web')],
  ['PUT', '/apis/apps/v1/namespaces/default/deployments/web/scale', res('update', 'apps', 'v1', 'default', 'deployments', 'scale', 'web')],
  ['POST', '/api/v1/namespaces/default/serviceaccounts/default/token', res('create', '', 'v1', 'default', 'serviceaccounts', 'token', 'default')],
  // an empty name segment is no name: list, and a subresource nonetheless
  ['GET', '/api/v1/pods//status', res('list', '', 'v1', '', 'pods', 'status', '')],

  // --- proxy: a subresource (verb from method); the verb "proxy" only via the legacy prefix ---
  ['GET', '/api/v1/namespaces/x/services/y:80/proxy/some/path', res('get', '', 'v1', 'x', 'services', 'proxy', 'y:80')],
  ['POST', '/api/v1/namespaces/x/services/https:web:443/proxy/api?q=1', res('create', '', 'v1', 'x', 'services', 'proxy', 'https:web:443')],
  ['GET', '/api/v1/nodes/n/proxy/metrics', res('get', '', 'v1', '', 'nodes', 'proxy', 'n')],
  ['GET', '/api/v1/proxy/namespaces/x/pods/p/some/path', res('proxy', '', 'v1', 'x', 'pods', '', 'p')],
  ['GET', '/api/v1/proxy/nodes/n/metrics', res('proxy', '', 'v1', '', 'nodes', '', 'n')],

  // --- non-resource URLs: the lowercased method ---
  ['GET', '/healthz', nonres('get')],
  ['GET', '/readyz?verbose', nonres('get')],
  ['GET', '/livez', nonres('get')],
  ['GET', '/version', nonres('get')],
  ['GET', '/openapi/v3', nonres('get')],
  ['GET', '/openapi/v2', nonres('get')],
  ['GET', '/openapi/v3/apis/apps/v1?hash=abc', nonres('get')],
  ['GET', '/metrics', nonres('get')],
  ['GET', '/api', nonres('get')],
  ['GET', '/api/v1', nonres('get')],
  ['GET', '/apis', nonres('get')],
  ['GET', '/apis/apps', nonres('get')],
  ['GET', '/apis/apps/v1', nonres('get')],
  ['GET', '/apis/apps/v1/', nonres('get')],
  ['GET', '/.well-known/openid-configuration', nonres('get')],
  ['GET', '/openid/v1/jwks', nonres('get')],
  ['GET', '/', nonres('get')],
  ['POST', '/healthz', nonres('post')],
  ['PUT', '/logs/x', nonres('put')],

  // --- SelfSubject*Review ---
  ['POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', res('create', 'authentication.k8s.io', 'v1', '', 'selfsubjectreviews', '', '')],
  ['POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', res('create', 'authorization.k8s.io', 'v1', '', 'selfsubjectaccessreviews', '', '')],

  // --- fieldSelector metadata.name on list/watch supplies the name ---
  ['GET', '/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt&watch=true&resourceVersion=123', res('watch', '', 'v1', 'kube-system', 'configmaps', '', 'kube-root-ca.crt')],
  ['GET', '/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dtoken&limit=500', res('list', '', 'v1', 'default', 'secrets', '', 'token')],
  ['GET', '/api/v1/pods?fieldSelector=metadata.name=foo', res('list', '', 'v1', '', 'pods', '', 'foo')], // key cut at the first '='
  ['GET', '/api/v1/pods?watch=1&fieldSelector=metadata.name%3D%3Dweb', res('watch', '', 'v1', '', 'pods', '', 'web')], // "=="
  ['GET', '/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1', res('list', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?fieldSelector=metadata.name!%3Dfoo', res('list', '', 'v1', '', 'pods', '', '')],
  // terms are sorted before the first exact match is taken
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo%2Cmetadata.name%3Dbar', res('list', '', 'v1', '', 'pods', '', 'bar')],
  ['GET', '/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.name%3Dp1', res('list', '', 'v1', '', 'pods', '', 'p1')],
  // a valid labelSelector alongside is fine
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo&labelSelector=app%3Dweb%2Ctier%20notin%20(db)', res('list', '', 'v1', '', 'pods', '', 'foo')],
  // any ListOptions decode failure drops the name (watch is still honoured)
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo&limit=ten', res('list', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo&watch=true&timeoutSeconds=x', res('watch', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo&labelSelector=app%20in%20(a', res('list', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo%2Cbar', res('list', '', 'v1', '', 'pods', '', '')],
  // the name must be a valid path segment name
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3D..', res('list', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Da%2Fb', res('list', '', 'v1', '', 'pods', '', '')],
  // '+' is a space in a query: field "metadata.name " is another field
  ['GET', '/api/v1/pods?fieldSelector=metadata.name+%3D+foo', res('list', '', 'v1', '', 'pods', '', '')],
  // a pair containing ';' is dropped by Go's ParseQuery
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo;x=1', res('list', '', 'v1', '', 'pods', '', '')],
  // only a get turns into list/watch and takes the name; a delete without one is a deletecollection
  ['DELETE', '/api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dfoo', res('deletecollection', '', 'v1', 'x', 'pods', '', '')],
  // EqualFold (decode succeeded) folds U+017F to 's'; the fallback's ToLower does not
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo&watch=fal%C5%BFe', res('list', '', 'v1', '', 'pods', '', 'foo')],
  ['GET', '/api/v1/pods?fieldSelector=metadata.name%3Dfoo&watch=fal%C5%BFe&limit=x', res('watch', '', 'v1', '', 'pods', '', '')],

  // --- absolute-form request-target ---
  ['GET', 'https://10.0.0.1:6443/api/v1/namespaces/x/pods?watch=1', res('watch', '', 'v1', 'x', 'pods', '', '', '/api/v1/namespaces/x/pods')],
  ['OPTIONS', '*', nonres('options', '*')],
  // Go's ReadRequest takes a CONNECT target that isn't a path for an authority: URL.Path ""
  ['CONNECT', 'apiserver:6443', nonres('connect', '')],

  // --- hostile input: must not throw ---
  // best effort (Go's server answers 400 to a malformed escape): parsed undecoded
  ['GET', '/api/v1/namespaces/%zz/pods', res('list', '', 'v1', '%zz', 'pods', '', '')],
  ['GET', '/api/v1/namespaces/x/pods/%', res('get', '', 'v1', 'x', 'pods', '', '%')],
  // "//api//v1" is ["api", "", "v1"]: a resource request for resource "v1" with an empty version
  ['GET', '//api//v1', res('list', '', '', '', 'v1', '', '')],
  ['GET', '/api//v1/pods', res('get', '', '', '', 'v1', '', 'pods')],
  ['GET', `/api/v1/namespaces/default/pods/${longName}`, res('get', '', 'v1', 'default', 'pods', '', longName)],
  ['GET', `/api/v1/namespaces/ns/pods/p/log${manySegments}`, res('get', '', 'v1', 'ns', 'pods', 'log', 'p')],
  ['GET', `/${'a/'.repeat(5_000)}`, nonres('get')],
  ['GET', '/api/v1/pods?watch=%', res('list', '', 'v1', '', 'pods', '', '')], // pair dropped
  ['GET', '/api/v1/pods?watch=%zz&watch=true', res('watch', '', 'v1', '', 'pods', '', '')],
  ['GET', '/api/v1/pods?&&&=&watch&', res('watch', '', 'v1', '', 'pods', '', '')],
  // the path is decoded before it is split: %2F separates segments
  ['GET', '/api/v1/namespaces/a%2Fb/pods', res('get', '', 'v1', 'a', 'b', '', 'pods', '/api/v1/namespaces/a/b/pods')],
  ['GET', '/api/v1/namespaces/d%C3%A9v/pods', res('list', '', 'v1', 'dév', 'pods', '', '', '/api/v1/namespaces/dév/pods')],
  // Go keeps the byte 0xFF; a JS string gets U+FFFD
  ['GET', '/api/v1/namespaces/%FF/pods', res('list', '', 'v1', '\ufffd', 'pods', '', '', '/api/v1/namespaces/\ufffd/pods')],
  ['GET', '', nonres('get', '')],
  ['get', '/api/v1/pods', res('', '', 'v1', '', 'pods', '', '')], // methods are case-sensitive
];

t.ok(rows.length >= 45, `${rows.length} rows`);

for (const [method, url, want] of rows) {
  const label = `${method} ${url.length > 100 ? `${url.slice(0, 60)}…(${url.length} chars)` : url}`;
  t.test(label, async (t) => {
    const expected: RequestInfo = { ...want, path: want.path ?? pathOf(url) };
    t.strictSame(requestInfo(method, url), expected);
  });
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

t.test('never throws on junk', async (t) => {
  // deterministic xorshift, so a failure is reproducible
  let s = 0x2545f491;
  const rnd = (n: number): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
  const atoms = [
    '/',
    '//',
    '%',
    '%2',
    '%zz',
    '%2F',
    '%C3',
    '%FF',
    '?',
    '&',
    '=',
    ';',
    '+',
    '\\',
    ',',
    '(',
    ')',
    '!',
    '<',
    '>',
    ' ',
    '\t',
    '\u0000',
    '\ud800',
    '\udc00',
    'é',
    'ſ',
    'api',
    'apis',
    'v1',
    'namespaces',
    'watch',
    'proxy',
    'status',
    'finalize',
    'pods',
    'x',
    'watch=',
    'fieldSelector=',
    'labelSelector=',
    'limit=',
    'timeoutSeconds=',
    'metadata.name',
    '==',
    '!=',
    'in',
    'notin',
    '0',
    'false',
    '9223372036854775808',
  ];
  const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'get', '', 'X'];
  let n = 0;
  for (let i = 0; i < 5_000; i++) {
    let url = rnd(4) === 0 ? '' : '/';
    const len = rnd(24);
    for (let j = 0; j < len; j++) url += atoms[rnd(atoms.length)];
    const info = requestInfo(methods[rnd(methods.length)] ?? 'GET', url);
    if (typeof info.verb === 'string' && typeof info.path === 'string') n++;
  }
  t.equal(n, 5_000);
  // not strings at all (a caller bug, but still no throw)
  t.doesNotThrow(() => requestInfo(undefined as unknown as string, null as unknown as string));
});
