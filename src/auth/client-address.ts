// Who the client is. Normally the TCP peer; behind a load balancer listed in --trusted-proxies,
// the address that balancer (and any trusted hop before it) says it received the request from
// in X-Forwarded-For. Anyone can write that header, so it is believed only from a trusted peer,
// and only as far back as the chain stays trusted: walking from the right, each entry was
// appended by the hop after it, and the first untrusted one is the last address a trusted hop
// vouched for. Everything left of it was written by the client and could say anything.

import { BlockList, isIP, isIPv4 } from 'node:net';

export interface ClientAddress {
  /** The address limits and logs use. */
  client: string;
  /** The X-Forwarded-For value to send upstream. */
  forwardedFor: string;
}

/** How many X-Forwarded-For entries are examined at most: real chains have a few hops. */
const MAX_HOPS = 32;

export class ClientAddressResolver {
  private readonly list = new BlockList();
  private readonly any: boolean;

  /** `trusted`: addresses and CIDRs (v4 or v6), as validated by the configuration. */
  constructor(trusted: readonly string[]) {
    for (const range of trusted) addRange(this.list, range);
    this.any = trusted.length > 0;
  }

  /** Whether `peer` is a trusted proxy (exempt from the per-client connection cap). */
  isTrusted(peer: string): boolean {
    return this.any && this.contains(normalizePeer(peer));
  }

  /**
   * The client behind `peer` and the X-Forwarded-For to send on. `forwardedFor` is the header as
   * received (repeated headers joined with ", ") plus the peer when the peer is trusted, so the
   * apiserver's audit log keeps the whole chain; otherwise the client's header is dropped.
   */
  resolve(peer: string, forwardedFor: string | string[] | undefined): ClientAddress {
    const self = normalizePeer(peer);
    if (!this.any || !this.contains(self)) return { client: self, forwardedFor: self };
    const chain = (Array.isArray(forwardedFor) ? forwardedFor.join(', ') : (forwardedFor ?? '')).trim();
    if (chain === '') return { client: self, forwardedFor: self };
    return { client: this.walk(chain, self), forwardedFor: `${chain}, ${self}` };
  }

  /** From the right: skip trusted hops; the first untrusted address is the client. */
  private walk(chain: string, peer: string): string {
    let client = peer;
    let end = chain.length;
    for (let hops = 0; hops < MAX_HOPS && end > 0; hops++) {
      const comma = chain.lastIndexOf(',', end - 1);
      const address = parseForwardedEntry(chain.slice(comma + 1, end));
      // Garbage means the chain cannot be followed further: the last address vouched for stands.
      if (address === undefined) return client;
      client = address;
      if (!this.contains(address)) return client;
      end = comma === -1 ? 0 : comma;
    }
    return client;
  }

  private contains(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}

function addRange(list: BlockList, range: string): void {
  const slash = range.indexOf('/');
  const raw = slash === -1 ? range : range.slice(0, slash);
  let bits = slash === -1 ? undefined : Number(range.slice(slash + 1));
  let address = raw;
  const groups = isIP(raw) === 6 ? ipv6Groups(raw) : undefined;
  if (groups && isMappedIPv4(groups) && (bits === undefined || bits >= 96)) {
    // ::ffff:10.0.0.0/104 is 10.0.0.0/8: peers arrive normalised to IPv4.
    address = mappedIPv4(groups);
    bits = bits === undefined ? undefined : bits - 96;
  }
  const family = isIP(address) === 4 ? 'ipv4' : 'ipv6';
  if (bits === undefined) list.addAddress(address, family);
  else list.addSubnet(address, bits, family);
}

/**
 * A TCP peer as Node reports it, with an IPv4 client of a dual-stack listener
 * (`::ffff:192.0.2.7`) written as the IPv4 address it is.
 */
export function normalizePeer(peer: string): string {
  if (peer.length > 7 && peer.charCodeAt(0) === 58 /* : */ && peer.slice(0, 7).toLowerCase() === '::ffff:') {
    const v4 = peer.slice(7);
    if (isIPv4(v4)) return v4;
  }
  return peer;
}

/**
 * One X-Forwarded-For entry as an address, or undefined when it is not one. Beside bare
 * addresses, the forms some balancers write are accepted: `192.0.2.7:51234`, `[2001:db8::7]`
 * and `[2001:db8::7]:51234` (the port is dropped).
 */
export function parseForwardedEntry(entry: string): string | undefined {
  let text = entry.trim();
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close === -1) return undefined;
    const rest = text.slice(close + 1);
    if (rest !== '' && !(rest.startsWith(':') && isPort(rest.slice(1)))) return undefined;
    text = text.slice(1, close);
    return isIP(text) === 6 ? canonicalMapped(text) : undefined;
  }
  const family = isIP(text);
  if (family === 4) return text;
  if (family === 6) return canonicalMapped(text);
  const colon = text.lastIndexOf(':');
  if (colon !== -1 && text.indexOf(':') === colon && isPort(text.slice(colon + 1)) && isIPv4(text.slice(0, colon))) {
    return text.slice(0, colon);
  }
  return undefined;
}

function isPort(text: string): boolean {
  return /^\d{1,5}$/.test(text) && Number(text) <= 65535;
}

/** An IPv6 address, or the IPv4 address it maps (any spelling of ::ffff:a.b.c.d). */
function canonicalMapped(v6: string): string {
  const groups = ipv6Groups(v6);
  return groups && isMappedIPv4(groups) ? mappedIPv4(groups) : v6;
}

/**
 * The key failed logins are counted under: an IPv4 address as it is, an IPv6 address as its
 * /64 (one host or one home usually owns a whole /64 and can use any address in it).
 */
export function limitKey(address: string): string {
  const family = isIP(address);
  if (family !== 6) return address;
  const groups = ipv6Groups(address);
  if (!groups) return address;
  if (isMappedIPv4(groups)) return mappedIPv4(groups);
  return `${groups[0]!.toString(16)}:${groups[1]!.toString(16)}:${groups[2]!.toString(16)}:${groups[3]!.toString(16)}::/64`;
}

/** The eight 16-bit groups of an IPv6 address already checked by isIP (zone dropped). */
export function ipv6Groups(address: string): number[] | undefined {
  let text = address;
  const zone = text.indexOf('%');
  if (zone !== -1) text = text.slice(0, zone);
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    // An embedded IPv4 tail (::ffff:192.0.2.7) is two groups.
    const octets = tail.split('.').map(Number);
    if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255))) return undefined;
    text = `${text.slice(0, lastColon + 1)}${((octets[0]! << 8) | octets[1]!).toString(16)}:${((octets[2]! << 8) | octets[3]!).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (part: string | undefined): number[] => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const head = parse(halves[0]);
  const rest = parse(halves[1]);
  const missing = 8 - head.length - rest.length;
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return undefined;
  const groups = [...head, ...new Array<number>(missing).fill(0), ...rest];
  return groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

function isMappedIPv4(groups: number[]): boolean {
  return groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff;
}

function mappedIPv4(groups: number[]): string {
  const high = groups[6] ?? 0;
  const low = groups[7] ?? 0;
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
}
