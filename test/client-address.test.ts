// Who the client is: the TCP peer, unless the peer is a trusted proxy; then X-Forwarded-For
// walked from the right past trusted hops. And the key failed logins are counted under.
import t from 'tap';
import { ClientAddressResolver, ipv6Groups, limitKey, normalizePeer, parseForwardedEntry } from '../src/auth/client-address.js';

t.test('no trusted proxies: the peer, whatever the client writes', async (t) => {
  const r = new ClientAddressResolver([]);
  t.same(r.resolve('198.51.100.7', '203.0.113.9'), { client: '198.51.100.7', forwardedFor: '198.51.100.7' }, 'a spoofed X-Forwarded-For is neither believed nor forwarded');
  t.same(r.resolve('198.51.100.7', undefined), { client: '198.51.100.7', forwardedFor: '198.51.100.7' });
  t.same(r.resolve('::ffff:198.51.100.7', ['203.0.113.9', '10.0.0.1']), { client: '198.51.100.7', forwardedFor: '198.51.100.7' }, 'a mapped IPv4 peer is written as IPv4');
  t.notOk(r.isTrusted('127.0.0.1'));
});

t.test('an untrusted peer next to trusted ones: its header is still ignored', async (t) => {
  const r = new ClientAddressResolver(['10.0.0.0/8']);
  t.same(r.resolve('198.51.100.7', '10.0.0.1'), { client: '198.51.100.7', forwardedFor: '198.51.100.7' });
  t.same(r.resolve('198.51.100.7', '203.0.113.9, 10.0.0.2'), { client: '198.51.100.7', forwardedFor: '198.51.100.7' });
});

t.test('a trusted peer: the last entry it appended is the client; the chain is kept and the peer appended', async (t) => {
  const r = new ClientAddressResolver(['10.0.0.5']);
  t.ok(r.isTrusted('10.0.0.5'));
  t.ok(r.isTrusted('::ffff:10.0.0.5'), 'also as a mapped peer');
  t.notOk(r.isTrusted('10.0.0.6'));
  t.same(r.resolve('10.0.0.5', '203.0.113.9'), { client: '203.0.113.9', forwardedFor: '203.0.113.9, 10.0.0.5' });
  t.same(r.resolve('10.0.0.5', '1.1.1.1, 203.0.113.9'), { client: '203.0.113.9', forwardedFor: '1.1.1.1, 203.0.113.9, 10.0.0.5' }, "entries left of the first untrusted one are the client's to invent");
  t.same(r.resolve('10.0.0.5', ['1.1.1.1', '203.0.113.9']), { client: '203.0.113.9', forwardedFor: '1.1.1.1, 203.0.113.9, 10.0.0.5' }, 'repeated headers are one list');
  t.same(r.resolve('10.0.0.5', undefined), { client: '10.0.0.5', forwardedFor: '10.0.0.5' }, 'no header: the proxy itself is the client');
  t.same(r.resolve('10.0.0.5', '  '), { client: '10.0.0.5', forwardedFor: '10.0.0.5' });
});

t.test('several trusted hops are skipped, from the right', async (t) => {
  const r = new ClientAddressResolver(['10.0.0.0/8', '192.168.1.1', 'fd00::/8']);
  t.same(r.resolve('10.1.1.1', '203.0.113.9, 192.168.1.1, 10.2.2.2'), { client: '203.0.113.9', forwardedFor: '203.0.113.9, 192.168.1.1, 10.2.2.2, 10.1.1.1' });
  t.equal(r.resolve('10.1.1.1', '198.51.100.1,203.0.113.9,fd00::1').client, '203.0.113.9', 'no spaces, an IPv6 hop');
  t.equal(r.resolve('fd12::7', '203.0.113.9').client, '203.0.113.9', 'an IPv6 trusted peer');
  t.equal(r.resolve('10.1.1.1', '10.3.3.3, 192.168.1.1').client, '10.3.3.3', 'every entry trusted: the leftmost');
  t.equal(r.resolve('10.1.1.1', '203.0.113.9, 198.51.100.1').client, '198.51.100.1', 'the rightmost untrusted one, not the leftmost');
});

t.test('garbage stops the walk: the last address vouched for stands', async (t) => {
  const r = new ClientAddressResolver(['10.0.0.0/8']);
  t.equal(r.resolve('10.0.0.5', 'not-an-ip').client, '10.0.0.5', 'garbage right away: the peer');
  t.equal(r.resolve('10.0.0.5', '203.0.113.9, nonsense, 10.0.0.7').client, '10.0.0.7', 'garbage behind a trusted hop: that hop');
  t.equal(r.resolve('10.0.0.5', '203.0.113.9, , 10.0.0.7').client, '10.0.0.7', 'an empty entry');
  t.equal(r.resolve('10.0.0.5', 'unknown').client, '10.0.0.5');
  t.equal(r.resolve('10.0.0.5', '999.1.1.1').client, '10.0.0.5');
  t.equal(r.resolve('10.0.0.5', '203.0.113.9, 10.0.0.7 garbage').client, '10.0.0.5');
  t.equal(r.resolve('10.0.0.5', 'nonsense, 203.0.113.9').client, '203.0.113.9', 'garbage left of the client does not matter');
  t.equal(r.resolve('10.0.0.5', 'nonsense, 203.0.113.9').forwardedFor, 'nonsense, 203.0.113.9, 10.0.0.5', 'a trusted chain is forwarded as received');
  const long = Array.from({ length: 2000 }, () => '10.9.9.9').join(', ');
  t.equal(r.resolve('10.0.0.5', `203.0.113.9, ${long}`).client, '10.9.9.9', 'a very long trusted chain is walked only so far');
});

t.test('IPv6 and IPv4-mapped addresses', async (t) => {
  const r = new ClientAddressResolver(['2001:db8:ffff::/48', '::ffff:10.0.0.0/104']);
  t.same(r.resolve('2001:db8:ffff::1', '2001:db8:1::7'), { client: '2001:db8:1::7', forwardedFor: '2001:db8:1::7, 2001:db8:ffff::1' });
  t.equal(r.resolve('2001:db8:ffff::1', '[2001:db8:1::7]:51234').client, '2001:db8:1::7', 'bracketed with a port');
  t.equal(r.resolve('2001:db8:ffff::1', '[2001:db8:1::7]').client, '2001:db8:1::7', 'bracketed');
  t.equal(r.resolve('2001:db8:ffff::1', '203.0.113.9:443').client, '203.0.113.9', 'IPv4 with a port');
  t.equal(r.resolve('2001:db8:ffff::1', '::ffff:203.0.113.9').client, '203.0.113.9', 'a mapped IPv4 entry is IPv4');
  t.equal(r.resolve('2001:db8:ffff::1', '0:0:0:0:0:ffff:cb00:7109').client, '203.0.113.9', 'in any spelling');
  t.ok(r.isTrusted('10.1.2.3'), 'a mapped CIDR covers the IPv4 addresses');
  t.ok(r.isTrusted('::ffff:10.1.2.3'));
  t.equal(r.resolve('::ffff:10.1.2.3', '203.0.113.9').forwardedFor, '203.0.113.9, 10.1.2.3', 'the peer is appended as IPv4');
  t.notOk(r.isTrusted('2001:db8:fffe::1'));
  t.notOk(r.isTrusted(''), 'no address (a socket already gone) is never trusted');
  t.same(r.resolve('', '203.0.113.9'), { client: '', forwardedFor: '' });
});

t.test('parsing helpers', async (t) => {
  t.equal(normalizePeer('::FFFF:192.0.2.1'), '192.0.2.1');
  t.equal(normalizePeer('::ffff:zzz'), '::ffff:zzz');
  t.equal(normalizePeer('2001:db8::1'), '2001:db8::1');
  t.same(ipv6Groups('2001:db8::1'), [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
  t.same(ipv6Groups('::'), [0, 0, 0, 0, 0, 0, 0, 0]);
  t.same(ipv6Groups('fe80::1%eth0'), [0xfe80, 0, 0, 0, 0, 0, 0, 1]);
  t.same(ipv6Groups('::ffff:1.2.3.4'), [0, 0, 0, 0, 0, 0xffff, 0x102, 0x304]);
  t.same(ipv6Groups('1:2:3:4:5:6:7:8'), [1, 2, 3, 4, 5, 6, 7, 8]);
  for (const bad of ['1.2.3.4:99999', '[::1', '[::1]x', '1.2.3.4:', ':80', 'a:b', '']) t.equal(parseForwardedEntry(bad), undefined, `not an address: "${bad}"`);
});

t.test('limit keys: IPv4 as it is, IPv6 by /64, mapped IPv4 as IPv4', async (t) => {
  t.equal(limitKey('192.0.2.1'), '192.0.2.1');
  t.equal(limitKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  t.equal(limitKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64', 'the same /64');
  t.equal(limitKey('2001:0DB8:0001:0002::9'), '2001:db8:1:2::/64', 'any spelling');
  t.not(limitKey('2001:db8:1:3::1'), limitKey('2001:db8:1:2::1'), 'the next /64 is another client');
  t.equal(limitKey('::ffff:192.0.2.1'), '192.0.2.1');
  t.equal(limitKey(''), '');
});
