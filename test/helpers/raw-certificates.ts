// Certificates with any subject, built from raw DER and signed by a test CA (ECDSA P-256,
// clientAuth), since no issuing library writes the subjects under test (several CNs, padded or
// empty O values, T61String, BMPString, PrintableString with '_', invalid UTF-8, a UID
// attribute); and the corpus of subjects the identity tests run, each with what kube-apiserver
// derives from it directly (Go's crypto/x509 reading, checked on the real apiserver by
// test/cluster/identity-differential.test.ts).
import { createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';
import type { UserInfo } from '../../standin/apiserver.js';

export const AUTHENTICATED = 'system:authenticated';

function der(tag: number, ...parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts);
  const length: number[] = [];
  for (let n = body.length; n > 0; n = Math.floor(n / 256)) length.unshift(n % 256);
  return Buffer.concat([Buffer.from([tag, ...(body.length < 0x80 ? [body.length] : [0x80 | length.length, ...length])]), body]);
}

function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number);
  const bytes: number[] = [];
  for (const arc of [a * 40 + b, ...rest]) {
    const groups = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) groups.unshift((n & 0x7f) | 0x80);
    bytes.push(...groups);
  }
  return der(0x06, Buffer.from(bytes));
}

/** The elements inside a DER element. */
function children(element: Buffer): Buffer[] {
  const body = element.subarray(element[1]! & 0x80 ? 2 + (element[1]! & 0x7f) : 2);
  const out: Buffer[] = [];
  for (let i = 0; i < body.length;) {
    let length = body[i + 1]!;
    let head = 2;
    if (length & 0x80) {
      head += length & 0x7f;
      length = body.subarray(i + 2, i + head).reduce((x, y) => x * 256 + y, 0);
    }
    out.push(body.subarray(i, i + head + length));
    i += head + length;
  }
  return out;
}

export const STRING_TAGS = { utf8: 0x0c, printable: 0x13, t61: 0x14, ia5: 0x16, bmp: 0x1e } as const;
// UID: Kubernetes' (apimachinery asn1.X509UID), which the apiserver reads; LDAP_UID: the LDAP one, which it ignores.
const ATTRIBUTE_TYPES = { CN: '2.5.4.3', O: '2.5.4.10', UID: '1.3.6.1.4.1.57683.2', LDAP_UID: '0.9.2342.19200300.100.1.1' } as const;
export type Attribute = [type: keyof typeof ATTRIBUTE_TYPES, value: string | Buffer, encoding?: keyof typeof STRING_TAGS];
/** One RDN per attribute; an array of attributes is one multi-valued RDN. */
export type Subject = (Attribute | Attribute[])[];

function attribute([type, value, encoding = 'utf8']: Attribute): Buffer {
  const bytes = Buffer.isBuffer(value) ? value : encoding === 'bmp' ? Buffer.from(value, 'utf16le').swap16() : Buffer.from(value, encoding === 'utf8' ? 'utf8' : 'latin1');
  return der(0x30, oid(ATTRIBUTE_TYPES[type]), der(STRING_TAGS[encoding], bytes));
}

const utcTime = (date: Date) => der(0x17, Buffer.from(`${date.toISOString().slice(2, 19).replace(/[-T:]/g, '')}Z`, 'latin1'));

export interface ClientCert {
  cert: string;
  key: string;
}

export function clientCertificate(ca: ClientCert, subject: Subject): ClientCert {
  const caFields = children(children(Buffer.from(new X509Certificate(ca.cert).raw))[0]!);
  const issuer = caFields[caFields[0]![0] === 0xa0 ? 5 : 4]!;
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecdsaWithSha256 = der(0x30, oid('1.2.840.10045.4.3.2'));
  const serial = randomBytes(16);
  // Positive and minimally encoded (DER): a leading 0x00 before a byte under 0x80 makes Go and
  // OpenSSL refuse the certificate, one time in 512.
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const tbs = der(
    0x30,
    der(0xa0, der(0x02, Buffer.from([2]))),
    der(0x02, serial),
    ecdsaWithSha256,
    issuer,
    der(0x30, utcTime(new Date(Date.now() - 3_600_000)), utcTime(new Date(Date.now() + 86_400_000))),
    der(0x30, ...subject.map((rdn) => der(0x31, ...(Array.isArray(rdn[0]) ? (rdn as Attribute[]) : [rdn as Attribute]).map(attribute)))),
    publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, der(0x30, der(0x30, oid('2.5.29.37'), der(0x04, der(0x30, oid('1.3.6.1.5.5.7.3.2')))))),
  );
  const cert = der(0x30, tbs, ecdsaWithSha256, der(0x03, Buffer.from([0]), sign('sha256', tbs, createPrivateKey(ca.key))));
  return {
    cert: `-----BEGIN CERTIFICATE-----\n${cert.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`,
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/** What the stand-in answers on /test/identity: which authenticator took the request, and the user. */
export interface Seen {
  authn: string;
  user: UserInfo | null;
}

// ---------------------------------------------------------------------------------------------
// Forwarded exactly...

export interface ExactCase {
  name: string;
  subject: Subject;
  /** What kube-apiserver derives (Go's reading of the subject). */
  user: string;
  groups: string[];
}

export const EXACT: ExactCase[] = [
  {
    name: 'several CNs: Go keeps the last (FillFromRDNSequence)',
    subject: [
      ['CN', 'first'],
      ['CN', 'second'],
      ['O', 'devs'],
    ],
    user: 'second',
    groups: ['devs'],
  },
  {
    name: 'a multi-valued RDN is read in order',
    subject: [
      [
        ['O', 'g1'],
        ['CN', 'mv'],
        ['O', 'g2'],
      ],
    ],
    user: 'mv',
    groups: ['g1', 'g2'],
  },
  {
    name: 'non-ASCII UTF-8',
    subject: [
      ['CN', 'José'],
      ['O', '开发'],
      ['O', '😀'],
      ['O', 'Ωmega'],
    ],
    user: 'José',
    groups: ['开发', '😀', 'Ωmega'],
  },
  {
    name: 'T61String (read as Latin-1) and BMPString',
    subject: [
      ['CN', 'Jos\u00e9', 't61'],
      ['O', 'Zoë', 'bmp'],
    ],
    user: 'José',
    groups: ['Zoë'],
  },
  {
    name: 'reserved system: names are names like any other',
    subject: [
      ['CN', 'system:admin'],
      ['O', 'system:masters'],
      ['O', AUTHENTICATED],
    ],
    user: 'system:admin',
    groups: ['system:masters', AUTHENTICATED],
  },
  {
    name: 'an LDAP UID attribute is not the Kubernetes UID: ignored',
    subject: [
      ['CN', 'alice'],
      ['LDAP_UID', 'u-1'],
    ],
    user: 'alice',
    groups: [],
  },
  { name: 'many O values (40)', subject: [['CN', 'many'], ...Array.from({ length: 40 }, (_, i): Attribute => ['O', `team-${i}`])], user: 'many', groups: Array.from({ length: 40 }, (_, i) => `team-${i}`) },
  // Go trims SP and HTAB only: these are other names than "alice" and "system:masters", both ways.
  {
    name: 'a BOM and a no-break space are not trimmed',
    subject: [
      ['CN', '\ufeffalice'],
      ['O', '\u00a0system:masters'],
    ],
    user: '\ufeffalice',
    groups: ['\u00a0system:masters'],
  },
];

// ...or refused by the proxy, saying why.

export interface RefusedCase {
  name: string;
  subject: Subject;
  message: RegExp;
  /** What the stand-in (as kube-apiserver) makes of it directly. */
  direct: Seen | 'handshake failed' | { authn: 'x509'; user: Partial<UserInfo> } | { kind: 'Status'; code: number };
  /** OpenSSL itself refuses the certificate: the proxy's handshake fails before any Status. */
  opensslRefuses?: boolean;
}

export const REFUSED: RefusedCase[] = [
  {
    name: "a padded O: ' system:masters' is not system:masters",
    subject: [
      ['CN', 'mallory'],
      ['O', ' system:masters'],
    ],
    message: /^certificate subject cannot be forwarded exactly: organization ' system:masters' has leading or trailing whitespace$/,
    direct: { authn: 'x509', user: { username: 'mallory', groups: [' system:masters', AUTHENTICATED] } },
  },
  { name: 'a padded CN', subject: [['CN', 'alice ']], message: /common name 'alice ' has leading or trailing whitespace$/, direct: { authn: 'x509', user: { username: 'alice ' } } },
  {
    name: 'a tab (HTTP/1.1 would strip it)',
    subject: [
      ['CN', 'alice'],
      ['O', 'system:masters\t'],
    ],
    message: /organization 'system:masters\\u0009' contains a control character \(U\+0009\)$/,
    direct: { authn: 'x509', user: { groups: ['system:masters\t', AUTHENTICATED] } },
  },
  { name: 'a control character (Go refuses the header)', subject: [['CN', 'ali\u0001ce']], message: /common name 'ali\\u0001ce' contains a control character \(U\+0001\)$/, direct: { authn: 'x509', user: { username: 'ali\u0001ce' } } },
  {
    name: 'NUL',
    subject: [
      ['CN', 'alice'],
      ['O', 'a\u0000b'],
    ],
    message: /organization 'a\\u0000b' contains a control character \(U\+0000\)$/,
    direct: { authn: 'x509', user: { groups: ['a\u0000b', AUTHENTICATED] } },
  },
  {
    name: 'an empty O (the apiserver skips an empty X-Remote-Group)',
    subject: [
      ['CN', 'alice'],
      ['O', ''],
    ],
    message: /organization '' is empty$/,
    direct: { authn: 'x509', user: { groups: ['', AUTHENTICATED] } },
  },
  {
    name: 'a Kubernetes UID attribute (no header carries it)',
    subject: [
      ['CN', 'alice'],
      ['UID', 'u-1'],
    ],
    message: /carries a (Kubernetes )?UID attribute/,
    direct: { authn: 'x509', user: { username: 'alice', uid: 'u-1' } },
  },
  // The x509 authenticator derives no user, and the requestheader one failed to verify it: 401.
  {
    name: 'an empty last CN: no user directly',
    subject: [
      ['CN', 'alice'],
      ['CN', ''],
    ],
    message: /^client certificate has no common name \(CN\)/,
    direct: { kind: 'Status', code: 401 },
  },
  {
    name: 'a PrintableString Go refuses',
    subject: [['CN', 'alice_x', 'printable']],
    message: /^client certificate cannot be parsed by kube-apiserver \(Go crypto\/x509: x509: invalid RDNSequence: invalid attribute value: invalid PrintableString\)$/,
    direct: 'handshake failed',
  },
  {
    name: 'invalid UTF-8',
    subject: [
      ['CN', 'alice'],
      ['O', Buffer.from([0x61, 0xff])],
    ],
    message: /invalid UTF-8 string/,
    direct: 'handshake failed',
    opensslRefuses: true,
  },
  { name: 'an IA5String Go refuses', subject: [['CN', Buffer.from('alic\u00e9', 'latin1'), 'ia5']], message: /invalid IA5String\)$/, direct: 'handshake failed' },
];
