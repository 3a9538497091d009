// The users-file editor behind `kube-front-proxy user add|set-password|remove|list`: round trips
// through parseHtpasswd, foreign lines kept byte for byte, refusals, atomic replacement, Apache
// htpasswd agreeing with the hashes, and password input from pipes and terminals.
import t from 'tap';
import fs from 'node:fs';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { PassThrough, Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import bcrypt from 'bcryptjs';
import { parseHtpasswd } from '../src/auth/htpasswd.js';
import { UsersFileError, addUser, listUsers, removeUser, setPassword } from '../src/auth/users-file.js';
import { readPassword } from '../src/commands/input.js';

const FAST = { cost: 4 };
const dir = mkdtempSync(join(tmpdir(), 'kfp-users-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let counter = 0;
const fresh = (content?: string | Buffer): string => {
  const path = join(dir, `users-${++counter}`);
  if (content !== undefined) writeFileSync(path, content, { mode: 0o640 });
  return path;
};
const strayTemps = (): string[] => readdirSync(dir).filter((f) => f.endsWith('.tmp'));

// A valid cost-4 bcrypt hash to build foreign lines with (password "other").
const OTHER_HASH = bcrypt.hashSync('other', 4);

t.test('add, set-password, remove and list round-trip through parseHtpasswd', async (t) => {
  const path = fresh();
  await addUser(path, 'alice', 'alice-pw', ['devs', 'ops'], FAST);
  await addUser(path, 'bob', 'bob-pw', [], FAST);
  t.equal(statSync(path).mode & 0o777, 0o600, 'a new file is created 0600');
  let table = parseHtpasswd(readFileSync(path, 'utf8'));
  t.same([...table.users.keys()], ['alice', 'bob']);
  t.same(table.users.get('alice')?.groups, ['devs', 'ops']);
  t.ok(bcrypt.compareSync('alice-pw', table.users.get('alice')!.hash));
  t.match(readFileSync(path, 'utf8'), /^alice:\$2b\$04\$[./A-Za-z0-9]{53}:devs,ops\nbob:\$2b\$04\$[./A-Za-z0-9]{53}\n$/);

  t.same(listUsers(path), [
    { name: 'alice', groups: ['devs', 'ops'], cost: 4, scheme: '$2b$' },
    { name: 'bob', groups: [], cost: 4, scheme: '$2b$' },
  ]);

  await setPassword(path, 'alice', 'new-pw', FAST);
  table = parseHtpasswd(readFileSync(path, 'utf8'));
  t.ok(bcrypt.compareSync('new-pw', table.users.get('alice')!.hash), 'new password works');
  t.notOk(bcrypt.compareSync('alice-pw', table.users.get('alice')!.hash), 'old password does not');
  t.same(table.users.get('alice')?.groups, ['devs', 'ops'], 'groups kept when not given');

  await setPassword(path, 'bob', 'bob-pw2', { cost: 5, groups: ['admins'] });
  t.same(
    listUsers(path).find((u) => u.name === 'bob'),
    { name: 'bob', groups: ['admins'], cost: 5, scheme: '$2b$' },
    'groups replaced, cost applied',
  );

  await removeUser(path, 'alice');
  t.same(
    listUsers(path).map((u) => u.name),
    ['bob'],
  );
  t.same(strayTemps(), [], 'no temp file left on the normal path');
  t.equal(statSync(path).mode & 0o777, 0o600);
});

t.test('the default cost is 12', async (t) => {
  const path = fresh();
  await addUser(path, 'carol', 'carol-pw', []);
  const [carol] = listUsers(path);
  t.equal(carol?.cost, 12);
  t.equal(bcrypt.getRounds(parseHtpasswd(readFileSync(path, 'utf8')).users.get('carol')!.hash), 12);
});

t.test('lines the command does not own are kept byte for byte', async (t) => {
  const head = `# users\r\n\r\n  # indented comment\r\nzed:${OTHER_HASH}:a,b\r\n`;
  const mid = `target:${OTHER_HASH}\r\n`;
  const tail = `\n# LF line among CRLF\nyan:${OTHER_HASH}`; // no final newline
  const path = fresh(head + mid + tail);

  await setPassword(path, 'target', 'pw-1', FAST);
  let text = readFileSync(path, 'latin1');
  t.ok(text.startsWith(head), 'everything before the edited line is identical');
  t.ok(text.endsWith(tail), 'everything after it is identical, still without a final newline');
  const edited = text.slice(head.length, text.length - tail.length);
  t.match(edited, /^target:\$2b\$04\$[./A-Za-z0-9]{53}\r\n$/, 'the edited line keeps its CRLF');
  t.equal(statSync(path).mode & 0o777, 0o640, 'the existing mode is kept');

  const beforeAdd = readFileSync(path);
  await addUser(path, 'newbie', 'pw-2', ['g'], FAST);
  const afterAdd = readFileSync(path);
  t.same(afterAdd.subarray(0, beforeAdd.length), beforeAdd, 'add only appends');
  t.match(afterAdd.subarray(beforeAdd.length).toString('latin1'), /^\nnewbie:\$2b\$04\$[./A-Za-z0-9]{53}:g$/, "in the file's last line ending (LF here), keeping the missing final newline");

  await removeUser(path, 'target');
  text = readFileSync(path, 'latin1');
  t.equal(text, head + tail + afterAdd.subarray(beforeAdd.length).toString('latin1'), 'remove drops exactly the line and its ending');

  await removeUser(path, 'newbie');
  t.equal(readFileSync(path, 'latin1'), head + tail + '\n', 'removing the last line leaves the previous line with its own ending');
  t.same(
    listUsers(path).map((u) => u.name),
    ['zed', 'yan'],
  );
  t.same(strayTemps(), []);
});

t.test('non-UTF-8 bytes in a comment survive an edit', async (t) => {
  const raw = Buffer.concat([Buffer.from('# caf'), Buffer.from([0xe9, 0xff]), Buffer.from(`\nu:${OTHER_HASH}\n`)]);
  const path = fresh(raw);
  await addUser(path, 'v', 'pw', [], FAST);
  t.same(readFileSync(path).subarray(0, raw.length), raw);
});

t.test('refusals', async (t) => {
  const content = `alice:${OTHER_HASH}\n`;
  const path = fresh(content);
  const refuses = async (p: Promise<unknown>, pattern: RegExp, what: string) => {
    await t.rejects(p, UsersFileError, what);
    await p.catch((err: Error) => {
      t.match(err.message, pattern, what);
      t.ok(err.message.startsWith(`${path}: `), 'names the file');
      t.notOk(err.message.includes('\n'), 'one line');
    });
  };
  await refuses(addUser(path, 'alice', 'pw', [], FAST), /user "alice" already exists/, 'existing user');
  await refuses(setPassword(path, 'nobody', 'pw', FAST), /no user "nobody"/, 'unknown user (set-password)');
  await refuses(removeUser(path, 'nobody'), /no user "nobody"/, 'unknown user (remove)');
  await refuses(addUser(path, '', 'pw', [], FAST), /user name is empty/, 'empty name');
  await refuses(addUser(path, 'a:b', 'pw', [], FAST), /contains ':'/, 'colon in name');
  await refuses(addUser(path, 'a b', 'pw', [], FAST), /whitespace or a control/, 'space in name');
  await refuses(addUser(path, 'a\tb', 'pw', [], FAST), /whitespace or a control/, 'tab in name');
  await refuses(addUser(path, 'a\u0007', 'pw', [], FAST), /whitespace or a control/, 'control char in name');
  await refuses(addUser(path, '#x', 'pw', [], FAST), /comment/, 'name read as a comment');
  await refuses(addUser(path, 'b', 'pw', ['ok', 'a,b'], FAST), /group "a,b" contains/, 'comma in group');
  await refuses(addUser(path, 'b', 'pw', ['a:b'], FAST), /group "a:b" contains/, 'colon in group');
  await refuses(addUser(path, 'b', 'pw', ['a b'], FAST), /group "a b" contains whitespace/, 'space in group');
  await refuses(addUser(path, 'b', 'pw', [''], FAST), /group name is empty/, 'empty group');
  await refuses(setPassword(path, 'alice', 'pw', { ...FAST, groups: ['x y'] }), /group "x y"/, 'bad group on set-password');
  await refuses(addUser(path, 'b', '', [], FAST), /password is empty/, 'empty password');
  await refuses(addUser(path, 'b', 'x'.repeat(73), [], FAST), /73 bytes long; bcrypt reads only the first 72/, '73-byte password');
  await refuses(addUser(path, 'b', 'é'.repeat(37), [], FAST), /74 bytes/, 'counted in UTF-8 bytes, not characters');
  await refuses(setPassword(path, 'alice', 'x'.repeat(73), FAST), /73 bytes/, '73-byte password on set-password');
  await addUser(path, 'max', 'x'.repeat(72), [], FAST);
  t.ok(bcrypt.compareSync('x'.repeat(72), parseHtpasswd(readFileSync(path, 'utf8')).users.get('max')!.hash), '72 bytes is accepted');
  await removeUser(path, 'max');
  t.equal(readFileSync(path, 'utf8'), content, 'refused edits changed nothing');

  const broken = fresh(`# ok\nalice:${OTHER_HASH}\nbob:$apr1$abc$def\n`);
  const before = readFileSync(broken);
  for (const edit of [addUser(broken, 'carol', 'pw', [], FAST), setPassword(broken, 'alice', 'pw', FAST), removeUser(broken, 'alice')]) {
    await t.rejects(edit, { name: 'UsersFileError', message: /users-\d+: line 3: user "bob": unsupported hash/ }, 'an unparseable file is refused, naming the line');
  }
  t.throws(() => listUsers(broken), { message: /line 3/ });
  t.same(readFileSync(broken), before);

  t.throws(() => listUsers(join(dir, 'missing')), { name: 'UsersFileError', message: /missing: no such users file/ });
  await t.rejects(setPassword(join(dir, 'missing'), 'a', 'pw', FAST), UsersFileError);
  await t.rejects(removeUser(join(dir, 'missing'), 'a'), UsersFileError);
  t.same(strayTemps(), []);
});

t.test('a failure between writing the temp file and renaming leaves the original intact', async (t) => {
  const content = `# keep\nalice:${OTHER_HASH}:devs\n`;
  const path = fresh(content);
  const rename = fs.renameSync;
  let tempSeen: string | undefined;
  fs.renameSync = ((from: fs.PathLike) => {
    tempSeen = readFileSync(from, 'utf8');
    throw Object.assign(new Error('simulated crash before rename'), { code: 'EIO' });
  }) as typeof fs.renameSync;
  try {
    await t.rejects(setPassword(path, 'alice', 'pw', FAST), { name: 'UsersFileError', message: /cannot write: simulated crash before rename; the file is unchanged/ });
  } finally {
    fs.renameSync = rename;
  }
  t.match(tempSeen, /^# keep\nalice:\$2b\$04\$/, 'the complete new content had been written to the temp file');
  t.equal(readFileSync(path, 'utf8'), content, 'the original is byte-identical');
  t.same(strayTemps(), [], 'the temp file was cleaned up');
});

t.test('SIGKILL while writing a 10k-user file: the original is intact, never partially replaced', async (t) => {
  const lines = [`# big file`];
  for (let i = 0; i < 10_000; i++) lines.push(`user${i}:${OTHER_HASH}:group${i % 7}`);
  const content = lines.join('\n') + '\n';
  const path = fresh(content);
  const moduleUrl = new URL('../src/auth/users-file.ts', import.meta.url).href;
  // Let the child write half of the temp file, then die like a crash would.
  const script = `
    import fs from 'node:fs';
    const { setPassword } = await import(${JSON.stringify(moduleUrl)});
    const write = fs.writeSync;
    fs.writeSync = (fd, buf, off, len) => {
      const n = write(fd, buf, off, Math.floor(len / 2));
      fs.fsyncSync(fd);
      process.kill(process.pid, 'SIGKILL');
      return n;
    };
    await setPassword(${JSON.stringify(path)}, 'user5000', 'pw', { cost: 4 });
    console.log('not killed');
  `;
  const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    encoding: 'utf8',
    timeout: 10_000,
  });
  t.equal(res.signal, 'SIGKILL', `the child died mid-write (stderr: ${res.stderr.trim().slice(0, 300)})`);
  t.notMatch(res.stdout, /not killed/);
  t.equal(readFileSync(path, 'utf8'), content, 'the original file is byte-identical');
  t.equal(parseHtpasswd(readFileSync(path, 'utf8')).users.size, 10_000);
  const temps = strayTemps();
  t.equal(temps.length, 1, 'the crash left its partial temp file beside it (not in its place)');
  for (const tmp of temps) {
    t.ok(statSync(join(dir, tmp)).size < content.length, 'and it is partial');
    rmSync(join(dir, tmp));
  }
  // The file stays editable after the crash.
  await removeUser(path, 'user5000');
  t.equal(listUsers(path).length, 9_999);
});

t.test('Apache htpasswd verifies a password set by addUser', async (t) => {
  const which = spawnSync('htpasswd', [], { encoding: 'utf8' });
  if (which.error) {
    t.fail(`the Apache htpasswd binary is needed for this check (apt-get install apache2-utils): ${which.error.message}`);
    return;
  }
  const path = fresh();
  await addUser(path, 'apache', 'correct horse', [], FAST);
  await addUser(path, 'other', 'other-pw', [], FAST);
  await setPassword(path, 'other', 'changed pw', FAST);
  const ok = spawnSync('htpasswd', ['-vbB', path, 'apache', 'correct horse'], { encoding: 'utf8' });
  t.equal(ok.status, 0, `htpasswd -vbB accepts the right password: ${ok.stderr.trim()}`);
  const ok2 = spawnSync('htpasswd', ['-vbB', path, 'other', 'changed pw'], { encoding: 'utf8' });
  t.equal(ok2.status, 0, `and one set by setPassword: ${ok2.stderr.trim()}`);
  const bad = spawnSync('htpasswd', ['-vbB', path, 'apache', 'wrong'], { encoding: 'utf8' });
  t.not(bad.status, 0, 'and rejects a wrong one');

  // htpasswd -v reads everything after the first ':' as the hash, so it cannot check a line with
  // a groups field (httpd and nginx themselves stop at the next ':'). Check the hash without it.
  const grouped = fresh();
  await addUser(grouped, 'grouped', 'pw with groups', ['g1', 'g2'], FAST);
  const stripped = fresh(readFileSync(grouped, 'utf8').replace(/:g1,g2$/m, ''));
  const ok3 = spawnSync('htpasswd', ['-vbB', stripped, 'grouped', 'pw with groups'], { encoding: 'utf8' });
  t.equal(ok3.status, 0, `the hash of a user with groups verifies too: ${ok3.stderr.trim()}`);
});

// A stand-in terminal: a byte stream with isTTY and a setRawMode spy.
function fakeTty() {
  const input = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode: (on: boolean) => void };
  const rawCalls: boolean[] = [];
  input.isTTY = true;
  input.setRawMode = (on: boolean) => {
    rawCalls.push(on);
  };
  const output = new PassThrough();
  let shown = '';
  output.on('data', (c: Buffer) => {
    shown += c.toString('utf8');
  });
  return { input, output, rawCalls, shown: () => shown };
}

/** Types `answers[i]` once the i-th prompt has been shown. */
function typeOnPrompts(tty: ReturnType<typeof fakeTty>, prompt: RegExp, answers: string[]) {
  let next = 0;
  tty.output.on('data', () => {
    const seen = tty.shown().match(new RegExp(prompt.source, 'g'))?.length ?? 0;
    while (next < seen && next < answers.length) {
      const answer = answers[next++]!;
      setImmediate(() => tty.input.write(answer));
    }
  });
}

t.test('readPassword from a pipe reads the first line', async (t) => {
  t.equal(await readPassword(Readable.from(['s3cret\nsecond line\n']), new PassThrough(), 'Password: ', true), 's3cret');
  t.equal(await readPassword(Readable.from(['win\r\n']), new PassThrough(), 'Password: ', false), 'win', 'CRLF stripped');
  t.equal(await readPassword(Readable.from([Buffer.from('sp'), Buffer.from('lit ü'), Buffer.from('\n')]), new PassThrough(), 'Password: ', false), 'split ü', 'across chunks');
  t.equal(await readPassword(Readable.from(['no-newline']), new PassThrough(), 'Password: ', false), 'no-newline');
  const out = new PassThrough();
  let written = '';
  out.on('data', (c: Buffer) => {
    written += c.toString();
  });
  await readPassword(Readable.from(['x\n']), out, 'Password: ', false);
  t.equal(written, '', 'no prompt is written for a pipe');
  await t.rejects(readPassword(Readable.from([]), new PassThrough(), 'Password: ', false), /no password on standard input/);
});

t.test('readPassword from a terminal: raw mode, no echo, backspace, confirm', async (t) => {
  const tty = fakeTty();
  typeOnPrompts(tty, /Password/, ['sekx\x7fret\r', 'sex\bkrex\x7ft\r']);
  const pw = await readPassword(tty.input, tty.output, 'Password: ', true);
  t.equal(pw, 'sekret', 'backspace (DEL and ^H) erases');
  t.same(tty.rawCalls, [true, false, true, false], 'raw mode on for each read, and restored');
  t.equal(tty.shown(), 'Password: \nPassword (again): \n', 'nothing typed is echoed');
  t.notMatch(tty.shown(), /sek/);
});

t.test('readPassword from a terminal: both answers typed in one chunk', async (t) => {
  const tty = fakeTty();
  setImmediate(() => tty.input.write('abc\r\nabc\r'));
  t.equal(await readPassword(tty.input, tty.output, 'Password: ', true), 'abc');
});

t.test('readPassword from a terminal: a mismatch on confirm is refused', async (t) => {
  const tty = fakeTty();
  typeOnPrompts(tty, /Password/, ['first\r', 'secnod\r']);
  await t.rejects(readPassword(tty.input, tty.output, 'Password: ', true), /passwords do not match/);
  t.same(tty.rawCalls, [true, false, true, false]);
});

t.test('readPassword from a terminal: Ctrl-C rejects and restores the terminal', async (t) => {
  const tty = fakeTty();
  typeOnPrompts(tty, /Password/, ['abc\x03']);
  await t.rejects(readPassword(tty.input, tty.output, 'Password: ', false), /interrupted/);
  t.same(tty.rawCalls, [true, false]);
});

t.test('readPassword from a terminal without confirm; arrow keys ignored', async (t) => {
  const tty = fakeTty();
  typeOnPrompts(tty, /Token/, ['ab\x1b[Dc\x1b[1;5C\n']);
  t.equal(await readPassword(tty.input, tty.output, 'Token: ', false), 'abc');
  t.equal(tty.shown(), 'Token: \n');
});
