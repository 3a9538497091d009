// Top functions by self time in a V8 CPU profile (node --cpu-prof), for the closing notes and
// for deciding what to take off the request path.
// Usage: node --import tsx bench/profile-top.ts FILE [N] [--by-module]
// --by-module: time per module instead (a package in node_modules or one of our files), Node's
// internals and native code charged to the innermost module that called them: what each layer
// costs apart from the layers it calls.

import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const byModule = args.includes('--by-module');
const [file, count = '25'] = args.filter((a) => !a.startsWith('--'));
if (!file) {
  process.stderr.write('usage: profile-top.ts FILE.cpuprofile [N] [--by-module]\n');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parentOf = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);

function moduleOf(url: string): string | undefined {
  if (!url) return undefined;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  if (url.startsWith('node:')) return 'node: internals';
  const ours = /\/(src|dist)\/(.*)$/.exec(url);
  return ours ? `${ours[1]}/${ours[2]}` : url;
}

const timeUs = new Map<string, number>();
const add = (key: string, us: number) => timeUs.set(key, (timeUs.get(key) ?? 0) + us);
let idle = 0;
let total = 0;
profile.samples.forEach((id, i) => {
  const node = byId.get(id);
  if (!node) return;
  const us = profile.timeDeltas[i] ?? 0;
  total += us;
  if (node.callFrame.functionName === '(idle)') {
    idle += us;
    return;
  }
  if (!byModule) {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(src|dist)\//, '$1/')}:${lineNumber + 1}` : '';
    add(`${functionName || '(anonymous)'} ${where}`.trim(), us);
    return;
  }
  // The innermost frame of a package or of ours: Node's internals (and native code such as the
  // socket writes) are charged to whoever called them.
  let owner: string | undefined;
  for (let at: number | undefined = id; at !== undefined && !owner; at = parentOf.get(at)) {
    const module = moduleOf(byId.get(at)?.callFrame.url ?? '');
    if (module && module !== 'node: internals') owner = module;
  }
  add(owner ?? `node alone: ${node.callFrame.functionName || '(anonymous)'}`, us);
});
process.stdout.write(`${file}: ${(total / 1e6).toFixed(1)} s sampled, ${(((total - idle) / total) * 100).toFixed(0)}% busy${byModule ? '; per module, Node charged to its caller' : ''}\n`);
for (const [name, us] of [...timeUs.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(count))) {
  process.stdout.write(`${((us / (total - idle)) * 100).toFixed(1).padStart(5)}%  ${name}\n`);
}
