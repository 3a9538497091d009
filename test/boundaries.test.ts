// The source map's boundary rules (README "Source layout"), checked against the imports
// themselves: a rule the code breaks fails here, not in a reviewer's memory.
import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { PROJECT_ROOT } from './helpers/proxy.js';

const SRC = join(PROJECT_ROOT, 'src');

interface Edge {
  from: string;
  to: string;
  /** `import type`: erased at build time, no load-order dependency. */
  typeOnly: boolean;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

// `import x from './a.js'`, `import type {...} from`, `export * from`, and bare `import './a.js'`.
const IMPORT = /^\s*(import|export)\s+(type\s+)?(?:[^'"]*?from\s+)?['"](\.{1,2}\/[^'"]+)['"]/gm;

function importsOf(file: string): Edge[] {
  const text = readFileSync(file, 'utf8');
  const from = relative(PROJECT_ROOT, file);
  return [...text.matchAll(IMPORT)].map((m) => ({ from, to: relative(PROJECT_ROOT, resolve(dirname(file), m[3]!.replace(/\.js$/, '.ts'))), typeOnly: m[2] !== undefined }));
}

const edges = sourceFiles(SRC).flatMap(importsOf);

/** Which parts of src/ each part may not import (type-only imports included: a type names a dependency too). */
interface Rule {
  part: string;
  /** Everything outside these (and node: or package imports) is off limits... */
  mayImportOnly?: string[];
  /** ...or just these. */
  mayNotImport?: string[];
  /** Files of `part` the rule does not apply to. */
  except?: string[];
  why: string;
}

const RULES: Rule[] = [
  { part: 'src/auth/', mayImportOnly: ['src/auth/'], why: 'authentication answers verdicts (identity, refusal, not mine): no HTTP answers, no settings, no transport' },
  { part: 'src/config/', mayImportOnly: ['src/config/'], why: 'the settings are read before anything else exists' },
  { part: 'src/edge/', mayImportOnly: ['src/edge/', 'src/config/'], why: 'the client connection, before a request is admitted: it knows no user and no apiserver' },
  { part: 'src/observe/', mayImportOnly: ['src/observe/', 'src/auth/identity.ts', 'src/request/context.ts', 'src/edge/http2-abuse.ts'], why: 'logs and metrics are told what happened; they reach into nothing' },
  {
    part: 'src/upstream/',
    mayImportOnly: ['src/upstream/', 'src/proxy/headers.ts', 'src/auth/x509-name.ts', 'src/auth/trusted-cas.ts', 'src/material/certfiles.ts'],
    why: 'the apiservers side knows no client request; of the proxy it shares only the header contract',
  },
  { part: 'src/request/', mayNotImport: ['src/server.ts', 'src/commands/', 'src/upstream/', 'src/lifecycle/', 'src/workers/'], why: 'admission decides who a request is, not where it goes' },
  { part: 'src/proxy/', mayNotImport: ['src/server.ts', 'src/commands/', 'src/lifecycle/', 'src/workers/'], why: 'forwarding is wired by server.ts, never the other way' },
  { part: 'src/', mayNotImport: ['src/commands/'], except: ['src/cli.ts', 'src/commands/'], why: 'commands are entry points: only cli.ts dispatches to them' },
];

function breaks(rule: Rule, edge: Edge): boolean {
  if (!edge.from.startsWith(rule.part) || rule.except?.some((p) => edge.from.startsWith(p))) return false;
  if (rule.mayImportOnly) return !rule.mayImportOnly.some((p) => edge.to.startsWith(p));
  return rule.mayNotImport?.some((p) => edge.to.startsWith(p)) ?? false;
}

for (const rule of RULES) {
  t.test(`${rule.part}: ${rule.why}`, async (t) => {
    t.same(
      edges.filter((e) => breaks(rule, e)).map((e) => `${e.from} -> ${e.to}`),
      [],
    );
  });
}

t.test('a rule that no import could break is a typo', async (t) => {
  for (const rule of RULES)
    t.ok(
      edges.some((e) => e.from.startsWith(rule.part)),
      `${rule.part} has files that import`,
    );
});

t.test('no import cycles among the modules that run code at load (type-only imports aside)', async (t) => {
  const graph = new Map<string, string[]>();
  for (const e of edges) if (!e.typeOnly) graph.set(e.from, [...(graph.get(e.from) ?? []), e.to]);
  const cycles: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (node: string, path: string[]) => {
    if (state.get(node) === 'done') return;
    if (state.get(node) === 'visiting') {
      cycles.push([...path.slice(path.indexOf(node)), node].join(' -> '));
      return;
    }
    state.set(node, 'visiting');
    for (const next of graph.get(node) ?? []) visit(next, [...path, node]);
    state.set(node, 'done');
  };
  for (const node of graph.keys()) visit(node, []);
  t.same(cycles, []);
});

t.test('src/ imports nothing from test/, bench/, scripts/ or the stand-in', async (t) => {
  const outside = edges.filter((e) => !e.to.startsWith('src/'));
  t.same(
    outside.map((e) => `${e.from} -> ${e.to}`),
    [],
  );
});
