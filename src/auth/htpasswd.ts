// The users file: htpasswd-compatible `name:hash` lines with an optional third field of
// comma-separated groups (`alice:$2y$10$...:devs,ops`). nginx's auth_basic_user_file reads that
// third field as a comment, so one file serves both. Only bcrypt is accepted: bcryptjs returns
// a quiet `false` for MD5 ($apr1$), SHA and crypt hashes, which would lock users out silently.

export interface UserEntry {
  name: string;
  hash: string;
  groups: string[];
}

export interface UserTable {
  users: Map<string, UserEntry>;
  /** The highest bcrypt cost in the file: unknown users are checked against a hash of this cost. */
  maxCost: number;
}

const BCRYPT_HASH = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;

export class HtpasswdError extends Error {
  constructor(readonly line: number, problem: string) {
    super(`line ${line}: ${problem}`);
    this.name = 'HtpasswdError';
  }
}

function describeScheme(hash: string): string {
  if (hash.startsWith('$apr1$')) return 'MD5 ($apr1$, htpasswd\'s default)';
  if (hash.startsWith('{SHA}')) return 'SHA-1 ({SHA})';
  if (hash.startsWith('$1$')) return 'MD5-crypt ($1$)';
  if (hash.startsWith('$5$') || hash.startsWith('$6$')) return 'SHA-crypt';
  if (hash.startsWith('$2')) return 'a malformed bcrypt hash';
  if (hash === '') return 'an empty hash';
  return 'crypt or plain text';
}

export function parseHtpasswd(text: string): UserTable {
  const users = new Map<string, UserEntry>();
  let maxCost = 0;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(':');
    if (fields.length < 2 || fields.length > 3) {
      throw new HtpasswdError(lineNo, 'expected name:bcrypt-hash or name:bcrypt-hash:group,group');
    }
    const [name = '', hash = '', groupField = ''] = fields;
    if (name === '') throw new HtpasswdError(lineNo, 'empty user name');
    const cost = BCRYPT_HASH.exec(hash)?.[1];
    if (cost === undefined) {
      throw new HtpasswdError(lineNo, `user "${name}": unsupported hash, ${describeScheme(hash)}; use bcrypt (htpasswd -B or kube-front-proxy user add)`);
    }
    if (users.has(name)) throw new HtpasswdError(lineNo, `user "${name}" is listed twice`);
    const groups = groupField.split(',').map((g) => g.trim()).filter((g) => g !== '');
    users.set(name, { name, hash, groups });
    maxCost = Math.max(maxCost, Number(cost));
  });
  return { users, maxCost: maxCost || 10 };
}
