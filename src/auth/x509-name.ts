// A client certificate's subject as kube-apiserver reads it: Go's crypto/x509 parses the DER
// (parser.go parseName, parseASN1String) and fills a pkix.Name (FillFromRDNSequence), whose
// CommonName and Organization the x509 authenticator turns into the user and groups
// (k8s.io/apiserver request/x509 CommonNameUserConversion). OpenSSL's reading, which Node gives
// us in getPeerCertificate().subject, differs: it keeps the first CN where Go keeps the last,
// and it accepts strings Go refuses (then Go fails the TLS handshake). So the subject is read
// here from the certificate's bytes, by Go's rules.

/** What the x509 authenticator reads from a subject. */
export interface GoSubject {
  /** The last CN (Go overwrites CommonName per CN attribute); '' when there is none. */
  commonName: string;
  /** Every O, in order: the groups. */
  organizations: string[];
  /**
   * Every Kubernetes UID attribute (1.3.6.1.4.1.57683.2, apimachinery's asn1.X509UID), which
   * kube-apiserver 1.33+ reads as the user's UID (AllowParsingUserUIDFromCertAuth, on by default).
   * The LDAP UID attribute (0.9.2342.19200300.100.1.1) is not it: the apiserver ignores that one.
   */
  uids: string[];
}

/** Go's crypto/x509 could not parse the certificate; its message, as Go words it where it can. */
export class GoParseError extends Error {
  override name = 'GoParseError';
}

const SEQUENCE = 0x30;
const SET = 0x31;
const OID = 0x06;
const INTEGER = 0x02;
const VERSION = 0xa0; // [0] EXPLICIT

const CN = '2.5.4.3';
const O = '2.5.4.10';
const UID = '1.3.6.1.4.1.57683.2';

interface Element {
  tag: number;
  /** The contents, without tag and length. */
  body: Uint8Array;
  /** The offset just after the element. */
  next: number;
}

/** One DER element at `pos`, as cryptobyte's ReadAnyASN1 reads it: low tag numbers, minimal definite lengths. */
function element(der: Uint8Array, pos: number, end: number): Element {
  if (pos + 2 > end) throw new GoParseError('truncated element');
  const tag = der[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new GoParseError('high tag number');
  let length = der[pos + 1]!;
  let start = pos + 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    if (bytes === 0 || bytes > 4 || start + bytes > end) throw new GoParseError('invalid length');
    length = 0;
    for (let i = 0; i < bytes; i++) length = length * 256 + der[start + i]!;
    // DER: the long form only when needed, and no leading zero byte.
    if (length < 0x80 || der[start] === 0) throw new GoParseError('non-minimal length');
    start += bytes;
  }
  if (start + length > end) throw new GoParseError('truncated element');
  return { tag, body: der.subarray(start, start + length), next: start + length };
}

function expect(der: Uint8Array, pos: number, end: number, tag: number, what: string): Element {
  const el = element(der, pos, end);
  if (el.tag !== tag) throw new GoParseError(`malformed ${what}`);
  return el;
}

/** Dotted OID; cryptobyte refuses an empty one and non-minimal arcs. */
function objectIdentifier(body: Uint8Array): string {
  if (body.length === 0) throw new GoParseError('invalid attribute type');
  const arcs: number[] = [];
  let value = 0;
  let fresh = true;
  for (const byte of body) {
    if (fresh && byte === 0x80) throw new GoParseError('invalid attribute type');
    value = value * 128 + (byte & 0x7f);
    fresh = (byte & 0x80) === 0;
    if (fresh) {
      arcs.push(value);
      value = 0;
    }
  }
  if (!fresh) throw new GoParseError('invalid attribute type');
  const first = arcs[0]!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// Go's isPrintable: PrintableString's alphabet plus '*' and '&', which real CAs use.
const PRINTABLE = /^[A-Za-z0-9 '()*+,\-./:=?&]*$/;

/** parseASN1String: the string types Go accepts, decoded and checked as Go does. */
function goString(tag: number, body: Uint8Array): string {
  switch (tag) {
    case 0x14: // T61String: read as Latin-1
      return Buffer.from(body).toString('latin1');
    case 0x13: {
      // PrintableString
      const text = Buffer.from(body).toString('latin1');
      if (!PRINTABLE.test(text)) throw new GoParseError('invalid PrintableString');
      return text;
    }
    case 0x0c: // UTF8String
      try {
        return utf8.decode(body);
      } catch {
        throw new GoParseError('invalid UTF-8 string');
      }
    case 0x1e: {
      // BMPString: UCS-2, a trailing NUL terminator dropped, surrogates and noncharacters refused
      if (body.length % 2 !== 0) throw new GoParseError('invalid BMPString');
      const units = body.length >= 2 && body[body.length - 1] === 0 && body[body.length - 2] === 0 ? body.length - 2 : body.length;
      let text = '';
      for (let i = 0; i < units; i += 2) {
        const point = (body[i]! << 8) | body[i + 1]!;
        if (point === 0xfffe || point === 0xffff || (point >= 0xfdd0 && point <= 0xfdef) || (point >= 0xd800 && point <= 0xdfff)) {
          throw new GoParseError('invalid BMPString');
        }
        text += String.fromCharCode(point);
      }
      return text;
    }
    case 0x16: // IA5String
      if (body.some((byte) => byte > 0x7f)) throw new GoParseError('invalid IA5String');
      return Buffer.from(body).toString('latin1');
    case 0x12: // NumericString
      if (body.some((byte) => !(byte === 0x20 || (byte >= 0x30 && byte <= 0x39)))) throw new GoParseError('invalid NumericString');
      return Buffer.from(body).toString('latin1');
    default:
      throw new GoParseError(`unsupported string type: ${tag}`);
  }
}

/** parseName + FillFromRDNSequence over one Name. */
function readName(der: Uint8Array, pos: number, end: number, out: GoSubject | undefined): number {
  const name = expect(der, pos, end, SEQUENCE, 'RDNSequence');
  const nameEnd = name.next;
  let at = name.next - name.body.length;
  while (at < nameEnd) {
    const set = expect(der, at, nameEnd, SET, 'RDNSequence');
    let inner = set.next - set.body.length;
    while (inner < set.next) {
      const atv = expect(der, inner, set.next, SEQUENCE, 'attribute');
      const atvStart = atv.next - atv.body.length;
      const type = expect(der, atvStart, atv.next, OID, 'attribute type');
      const value = element(der, type.next, atv.next);
      let text: string;
      try {
        text = goString(value.tag, value.body);
      } catch (err) {
        throw new GoParseError(`x509: invalid RDNSequence: invalid attribute value: ${(err as Error).message}`);
      }
      const oid = objectIdentifier(type.body);
      if (out !== undefined) {
        if (oid === CN) out.commonName = text;
        else if (oid === O) out.organizations.push(text);
        else if (oid === UID) out.uids.push(text);
      }
      inner = atv.next;
    }
    at = set.next;
  }
  return nameEnd;
}

/**
 * The subject of a DER certificate as Go reads it; throws GoParseError where Go's parser fails
 * on the names (issuer or subject). Other parts of the certificate are not checked here.
 */
export function readGoSubject(der: Uint8Array): GoSubject {
  const cert = expect(der, 0, der.length, SEQUENCE, 'certificate');
  const tbs = expect(der, cert.next - cert.body.length, cert.next, SEQUENCE, 'tbs certificate');
  const end = tbs.next;
  let at = tbs.next - tbs.body.length;
  let field = element(der, at, end);
  if (field.tag === VERSION) field = element(der, (at = field.next), end);
  if (field.tag !== INTEGER) throw new GoParseError('malformed serial number');
  at = expect(der, field.next, end, SEQUENCE, 'signature algorithm').next;
  at = readName(der, at, end, undefined); // issuer: Go parses it by the same rules
  at = expect(der, at, end, SEQUENCE, 'validity').next;
  const subject: GoSubject = { commonName: '', organizations: [], uids: [] };
  readName(der, at, end, subject);
  return subject;
}
