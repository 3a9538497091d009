// Editing the users file (`kube-front-proxy user add|set-password|remove|list`). The file is the
// one src/auth/htpasswd.ts reads: `name:bcrypt-hash[:group,group]`, comments and blank lines.
//
// Edits are surgical and atomic: the file must parse (parseHtpasswd semantics) before it is
// touched; only the line of the user being edited is rewritten or removed, every other byte
// (comments, blank lines, other users, CRLF or LF endings, a missing final newline) is kept as it
// was; and the new content goes to a temporary file in the same directory (0600, or the mode of
// the file it replaces), is fsynced and then renamed over the original, so a crash leaves either
// the old file or the new one, never a partial one. Concurrent edits are not locked against each
// other: the last rename wins.
import fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { HtpasswdError, isCommentOrBlank, parseHtpasswd, usersFileValueProblem, type UserTable } from './htpasswd.js';
import { quoteValue } from './identity.js';

export class UsersFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsersFileError';
  }
}

export interface UserListing {
  name: string;
  groups: string[];
  cost: number;
  /** The bcrypt variant prefix, e.g. '$2y$' (Apache htpasswd) or '$2b$' (what user add writes). */
  scheme: string;
}

export const DEFAULT_COST = 12;
/** bcrypt reads only the first 72 bytes of a password; longer ones are refused, not truncated. */
export const MAX_PASSWORD_BYTES = 72;

// ---------------------------------------------------------------------------------------------
// Validation

// Whitespace (incl. Unicode spaces) and C0/C1 control characters.
const BAD_CHARS = /[\s\p{Cc}]/u;

function validateName(path: string, name: string): void {
  if (name === '') throw new UsersFileError(`${path}: the user name is empty`);
  if (name.includes(':')) throw new UsersFileError(`${path}: user name ${JSON.stringify(name)} contains ':'`);
  if (BAD_CHARS.test(name)) throw new UsersFileError(`${path}: user name ${JSON.stringify(name)} contains whitespace or a control character`);
  // The parser reads a line starting with '#' as a comment: such a user could never log in.
  if (name.startsWith('#')) throw new UsersFileError(`${path}: user name ${JSON.stringify(name)} starts with '#', which the file reads as a comment`);
  // Never write what the loader would refuse.
  const problem = usersFileValueProblem(name);
  if (problem !== undefined) throw new UsersFileError(`${path}: user name ${quoteValue(name)} ${problem}`);
}

function validateGroups(path: string, groups: string[]): string[] {
  for (const group of groups) {
    if (group === '') throw new UsersFileError(`${path}: a group name is empty`);
    if (group.includes(':') || group.includes(',')) throw new UsersFileError(`${path}: group ${JSON.stringify(group)} contains ':' or ','`);
    if (BAD_CHARS.test(group)) throw new UsersFileError(`${path}: group ${JSON.stringify(group)} contains whitespace or a control character`);
    const problem = usersFileValueProblem(group);
    if (problem !== undefined) throw new UsersFileError(`${path}: group ${quoteValue(group)} ${problem}`);
  }
  return [...new Set(groups)];
}

function validatePassword(path: string, password: string): void {
  if (password === '') throw new UsersFileError(`${path}: the password is empty`);
  const bytes = Buffer.byteLength(password, 'utf8');
  if (bytes > MAX_PASSWORD_BYTES) {
    throw new UsersFileError(`${path}: the password is ${bytes} bytes long; bcrypt reads only the first ${MAX_PASSWORD_BYTES} bytes, so use at most ${MAX_PASSWORD_BYTES}`);
  }
}

function validateCost(path: string, cost: number): void {
  if (!Number.isInteger(cost) || cost < 4 || cost > 31) throw new UsersFileError(`${path}: bcrypt cost must be an integer from 4 to 31, not ${cost}`);
}

// ---------------------------------------------------------------------------------------------
// Reading the file as raw lines

interface RawLine {
  /** The line's bytes without its terminator. */
  content: Buffer;
  /** '\n', '\r\n' (the '\r' is part of the terminator here) or '' for a last line without one. */
  eol: string;
  /** The user this line defines, if any (same reading as parseHtpasswd). */
  user: string | undefined;
}

interface UsersFile {
  /** The path actually written: symlinks resolved, so the link itself survives an edit. */
  realPath: string;
  mode: number | undefined;
  uid: number | undefined;
  gid: number | undefined;
  lines: RawLine[];
  table: UserTable;
}

function readRaw(path: string, missingOk: boolean): UsersFile | undefined {
  let realPath: string;
  let data: Buffer;
  let stat: fs.Stats;
  try {
    realPath = fs.realpathSync(path);
    data = fs.readFileSync(realPath);
    stat = fs.statSync(realPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      if (missingOk) return undefined;
      throw new UsersFileError(`${path}: no such users file`);
    }
    throw new UsersFileError(`${path}: cannot read: ${(err as Error).message}`);
  }
  if (!stat.isFile()) throw new UsersFileError(`${path}: not a regular file`);

  let table: UserTable;
  try {
    table = parseHtpasswd(data.toString('utf8'));
  } catch (err) {
    if (err instanceof HtpasswdError) throw new UsersFileError(`${path}: ${err.message}; fix or remove that line first`);
    throw err;
  }

  const lines: RawLine[] = [];
  let start = 0;
  while (start < data.length) {
    const nl = data.indexOf(0x0a, start);
    const end = nl === -1 ? data.length : nl;
    let contentEnd = end;
    let eol = '';
    if (nl !== -1) {
      eol = '\n';
      if (end > start && data[end - 1] === 0x0d) {
        contentEnd = end - 1;
        eol = '\r\n';
      }
    }
    const content = data.subarray(start, contentEnd);
    const text = content.toString('utf8');
    // A byte-order mark opens the file, not the first user's name (as parseHtpasswd reads it).
    lines.push({ content, eol, user: userOfLine(start === 0 ? text.replace(/^\ufeff/, '') : text) });
    start = nl === -1 ? data.length : nl + 1;
  }
  return { realPath, mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid, lines, table };
}

function userOfLine(text: string): string | undefined {
  if (isCommentOrBlank(text)) return undefined;
  return text.split(':')[0];
}

function formatLine(name: string, hash: string, groups: string[]): string {
  return groups.length > 0 ? `${name}:${hash}:${groups.join(',')}` : `${name}:${hash}`;
}

// ---------------------------------------------------------------------------------------------
// Atomic write

function writeAtomic(path: string, file: Pick<UsersFile, 'realPath' | 'mode' | 'uid' | 'gid'>, content: Buffer): void {
  const dir = dirname(file.realPath);
  const tmp = join(dir, `.${basename(file.realPath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const mode = file.mode ?? 0o600;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', 0o600);
    fs.fchmodSync(fd, mode); // the umask does not apply to fchmod
    if (file.uid !== undefined && file.gid !== undefined && process.getuid?.() === 0) {
      try {
        fs.fchownSync(fd, file.uid, file.gid);
      } catch {
        /* best effort */
      }
    }
    let offset = 0;
    while (offset < content.length) offset += fs.writeSync(fd, content, offset, content.length - offset);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file.realPath);
  } catch (err) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* never created, or already renamed */
    }
    throw new UsersFileError(`${path}: cannot write: ${(err as Error).message}; the file is unchanged`);
  }
  // Make the rename itself durable. Not every platform can fsync a directory.
  try {
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    /* best effort */
  }
}

function serialize(lines: RawLine[]): Buffer {
  const parts: Buffer[] = [];
  for (const line of lines) {
    parts.push(line.content);
    if (line.eol !== '') parts.push(Buffer.from(line.eol, 'latin1'));
  }
  return Buffer.concat(parts);
}

/** The line ending the file already uses (the last one present), LF for a new or one-line file. */
function eolOf(lines: RawLine[]): string {
  for (let i = lines.length - 1; i >= 0; i--) {
    const eol = lines[i]?.eol;
    if (eol) return eol;
  }
  return '\n';
}

// ---------------------------------------------------------------------------------------------
// The commands

export function listUsers(path: string): UserListing[] {
  const file = readRaw(path, false)!;
  return [...file.table.users.values()].map(({ name, groups, hash }) => ({
    name,
    groups: [...groups],
    cost: Number(hash.slice(4, 6)),
    scheme: hash.slice(0, 4),
  }));
}

export async function addUser(path: string, name: string, password: string, groups: string[], options: { cost?: number } = {}): Promise<void> {
  const cost = options.cost ?? DEFAULT_COST;
  validateName(path, name);
  const cleanGroups = validateGroups(path, groups);
  validatePassword(path, password);
  validateCost(path, cost);
  const before = readRaw(path, true);
  if (before?.table.users.has(name)) throw new UsersFileError(`${path}: user "${name}" already exists; use set-password to change it`);

  const hash = await bcrypt.hash(password, cost);
  // Re-read after the (slow) hash so an edit made meanwhile is not silently undone.
  const file = readRaw(path, true);
  if (file?.table.users.has(name)) throw new UsersFileError(`${path}: user "${name}" already exists; use set-password to change it`);
  const lines = file?.lines ?? [];
  const eol = eolOf(lines);
  const last = lines.at(-1);
  const newLine = Buffer.from(formatLine(name, hash, cleanGroups), 'utf8');
  if (last !== undefined && last.eol === '') {
    // Keep the file's missing final newline: separate from the last line, end without one.
    last.eol = eol;
    lines.push({ content: newLine, eol: '', user: name });
  } else {
    lines.push({ content: newLine, eol, user: name });
  }
  const target = file ?? { realPath: path, mode: undefined, uid: undefined, gid: undefined };
  writeAtomic(path, target, serialize(lines));
}

export async function setPassword(path: string, name: string, password: string, options: { cost?: number; groups?: string[] } = {}): Promise<void> {
  const cost = options.cost ?? DEFAULT_COST;
  validateName(path, name);
  const newGroups = options.groups === undefined ? undefined : validateGroups(path, options.groups);
  validatePassword(path, password);
  validateCost(path, cost);
  if (!readRaw(path, false)!.table.users.has(name)) throw new UsersFileError(`${path}: no user "${name}"; use add to create it`);

  const hash = await bcrypt.hash(password, cost);
  const file = readRaw(path, false)!;
  const entry = file.table.users.get(name);
  const line = file.lines.find((l) => l.user === name);
  if (entry === undefined || line === undefined) throw new UsersFileError(`${path}: no user "${name}"; use add to create it`);
  line.content = Buffer.from(formatLine(name, hash, newGroups ?? entry.groups), 'utf8');
  writeAtomic(path, file, serialize(file.lines));
}

export async function removeUser(path: string, name: string): Promise<void> {
  const file = readRaw(path, false)!;
  const index = file.lines.findIndex((l) => l.user === name);
  if (index === -1 || !file.table.users.has(name)) throw new UsersFileError(`${path}: no user "${name}"`);
  // Other lines keep their own endings, so removing a last line that had no newline leaves the
  // file ending with the previous line's newline.
  file.lines.splice(index, 1);
  writeAtomic(path, file, serialize(file.lines));
}
