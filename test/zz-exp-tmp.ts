import { once } from 'node:events';
import { Agent, request } from 'undici';
import { startStack } from './helpers/setup.js';
const td: (() => unknown)[] = [];
const { pki, proxy } = await startStack({ teardown: (f) => td.push(f) }, { flags: ['--shutdown-grace', '4s'] });
const client = new Agent({ connect: { ca: pki.pem['proxy-ca'].cert, servername: 'localhost', cert: pki.pem['user-alice'].cert, key: pki.pem['user-alice'].key }, keepAliveTimeout: 60000, keepAliveMaxTimeout: 60000, connections: 1 });
const res = await request(`${proxy.url}/test/bytes?n=${64 * 1024 * 1024}`, { dispatcher: client });
res.body.pause();
const exited = once(proxy.child, 'exit');
proxy.child.kill('SIGTERM');
await new Promise(r => setTimeout(r, 300));
res.body.resume();
for await (const _ of res.body) {}
const again = await request(`${proxy.url}/api/v1/namespaces`, { dispatcher: client });
console.log(again.statusCode, again.headers, await again.body.text());
const [code] = await exited; console.log('exit', code);
await client.destroy(); for (const f of td) await f();
