// The users file: htpasswd-compatible `name:hash` lines with an optional third field of
// comma-separated groups (`alice:$2y$10$...:devs,ops`). nginx's auth_basic_user_file reads that
// third field as a comment, so one file serves both. Only bcrypt is accepted: bcryptjs returns
// a quiet `false` for MD5 ($apr1$), SHA and crypt hashes, which would lock users out silently.
//
// A user's name and groups go to kube-apiserver as these exact bytes (UTF-8) or the file is
// refused at load, naming the line: nothing in a field is trimmed or dropped, and a value the
// headers cannot carry exactly (identityValueProblem) is an error, not a surprise at login.

import { identityValueProblem, quoteValue } from './identity.js';

export interface UserEntry {
  name: string;
  hash: string;
  groups: string[];
}

export interface UserTable {
  users: Map<string, UserEntry>;
  /** The highest bcrypt cost in the file. */
  maxCost: number;
  /** How many users have each bcrypt cost, in ascending cost order. */
  costs?: Map<number, number>;
  /**
   * The cost of the hash an unknown user's password is compared with (see decoyCost); without
   * it, maxCost.
   */
  decoyCost?: number;
}

/**
 * The bcrypt cost an unknown user name is checked at: the cost most users have (the higher one
 * on a tie). A refused login takes as long for a name that does not exist as for the largest
 * group of names that do; only users whose hash has another cost answer in a time of their own.
 * (The highest cost, used before, hid only the users at that cost: with 100 users at 10 and one
 * admin at 14, every cost-10 name was told apart from a stranger, 5 ms against 386 ms.) No
 * single decoy hides every user of a file with mixed costs: hence the load warning
 * (costWarning), and `user set-password --cost` to bring the file to one cost.
 */
export function decoyCost(costs: Map<number, number>): number {
  let best = 0;
  let bestUsers = 0;
  for (const [cost, users] of costs) {
    if (users > bestUsers || (users === bestUsers && cost > best)) {
      best = cost;
      bestUsers = users;
    }
  }
  return best || 10;
}

/**
 * One warning line's text and fields when the users have more than one bcrypt cost (timing then
 * tells some names from unknown ones); undefined for a file with one cost.
 */
export function costWarning(table: UserTable): { msg: string; costs: Record<string, number>; decoyCost: number } | undefined {
  const costs = table.costs;
  if (costs === undefined || costs.size < 2) return undefined;
  const decoy = table.decoyCost ?? decoyCost(costs);
  const listed = [...costs].map(([cost, users]) => `cost ${cost}: ${users} user${users === 1 ? '' : 's'}`).join(', ');
  return {
    msg:
      `users file mixes bcrypt costs (${listed}): a failed login's duration tells the names whose cost is not ${decoy} from unknown names; ` +
      `unknown names are checked at cost ${decoy}. Give every user one cost (kube-front-proxy user set-password --cost ${decoy})`,
    costs: Object.fromEntries([...costs].map(([cost, users]) => [String(cost), users])),
    decoyCost: decoy,
  };
}

const BCRYPT_HASH = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;

export class HtpasswdError extends Error {
  constructor(
    readonly line: number,
    problem: string,
  ) {
    super(`line ${line}: ${problem}`);
    this.name = 'HtpasswdError';
  }
}

function describeScheme(hash: string): string {
  if (hash.startsWith('$apr1$')) return "MD5 ($apr1$, htpasswd's default)";
  if (hash.startsWith('{SHA}')) return 'SHA-1 ({SHA})';
  if (hash.startsWith('$1$')) return 'MD5-crypt ($1$)';
  if (hash.startsWith('$5$') || hash.startsWith('$6$')) return 'SHA-crypt';
  if (hash.startsWith('$2')) return 'a malformed bcrypt hash';
  if (hash === '') return 'an empty hash';
  return 'crypt or plain text';
}

/** A line that defines no user: blank, or a comment ('#' after optional spaces and tabs). */
export function isCommentOrBlank(line: string): boolean {
  return /^[ \t]*(#|$)/.test(line);
}

/**
 * Why a name or group from the file cannot be a user's identity, or undefined. U+FFFD stands
 * for bytes that were not UTF-8 when the file was read: the bytes it replaced are lost.
 */
export function usersFileValueProblem(value: string): string | undefined {
  if (value.includes('\ufffd')) return 'is not valid UTF-8 (or contains U+FFFD)';
  return identityValueProblem(value);
}

export function parseHtpasswd(text: string): UserTable {
  const users = new Map<string, UserEntry>();
  let maxCost = 0;
  const counts = new Map<number, number>();
  // A byte-order mark is the file's, not the first user's.
  const lines = text.replace(/^\ufeff/, '').split(/\r?\n/);
  lines.forEach((line, index) => {
    const lineNo = index + 1;
    if (isCommentOrBlank(line)) return;
    const fields = line.split(':');
    if (fields.length < 2 || fields.length > 3) {
      throw new HtpasswdError(lineNo, 'expected name:bcrypt-hash or name:bcrypt-hash:group,group');
    }
    const [name = '', hash = '', groupField = ''] = fields;
    if (name === '') throw new HtpasswdError(lineNo, 'empty user name');
    const nameProblem = usersFileValueProblem(name);
    if (nameProblem !== undefined) throw new HtpasswdError(lineNo, `user name ${quoteValue(name)} ${nameProblem}`);
    const cost = BCRYPT_HASH.exec(hash)?.[1];
    if (cost === undefined) {
      if (BCRYPT_HASH.test(hash.trim())) throw new HtpasswdError(lineNo, `user "${name}": the hash has spaces or tabs around it`);
      throw new HtpasswdError(lineNo, `user "${name}": unsupported hash, ${describeScheme(hash)}; use bcrypt (htpasswd -B or kube-front-proxy user add)`);
    }
    if (users.has(name)) throw new HtpasswdError(lineNo, `user "${name}" is listed twice`);
    // No field: no groups. Otherwise every comma-separated value is a group, exactly as written.
    const groups = fields.length === 3 && groupField !== '' ? groupField.split(',') : [];
    for (const group of groups) {
      const problem = usersFileValueProblem(group);
      if (problem !== undefined) throw new HtpasswdError(lineNo, `user "${name}": group ${quoteValue(group)} ${problem}`);
    }
    users.set(name, { name, hash, groups });
    maxCost = Math.max(maxCost, Number(cost));
    counts.set(Number(cost), (counts.get(Number(cost)) ?? 0) + 1);
  });
  const costs = new Map([...counts].sort(([a], [b]) => a - b));
  return { users, maxCost: maxCost || 10, costs, decoyCost: decoyCost(costs) };
}
