// Which client addresses have logged in successfully with which credential: the "known client"
// exemption from failed-login limits. One record for the process (login-limiter.ts), or for the
// whole proxy under --workers (the primary's, login-limits-authority.ts). Each worker's cache of
// verified credentials remembers the same for the credentials it holds; this record is the one
// asked when that cache does not know the client: a client it has not seen yet, or any client
// once a reload has emptied the cache.
//
// A reload keeps the record: a routine reload (SIGHUP, a certificate or CRL rotation, a users
// file rewritten with other users changed) must not hand the owners of credentials that still
// hold to whoever is guessing their passwords. What no longer holds goes: the users whose
// password hash changed or who were removed (forgetUsers), and a credential that fails its
// password check (forget), which can only be one whose entry changed since.
//
// Only a successful login adds to it, so nobody grows it without a valid password. Bounded all
// the same: at most `maxCredentials` credentials, the least recently used dropped first, and a
// few clients each (a user's laptop, CI, a second kubeconfig...), the oldest dropped first.

/** As BasicAuthenticator remembers per cached credential. */
const CLIENTS_PER_CREDENTIAL = 8;

interface KnownCredential {
  /** The user name it was verified for; undefined when only its use was reported (usedBy). */
  user: string | undefined;
  clients: string[];
}

export class KnownClients {
  /** Insertion-ordered: the first key is the least recently used. */
  private readonly byCredential = new Map<string, KnownCredential>();

  constructor(private readonly maxCredentials = 50_000) {}

  get size(): number {
    return this.byCredential.size;
  }

  has(credential: string, client: string): boolean {
    return this.byCredential.get(credential)?.clients.includes(client) === true;
  }

  /** `user`: the name the credential was verified for, when known. */
  add(credential: string, client: string, user?: string): void {
    const known = this.byCredential.get(credential) ?? { user, clients: [] };
    this.byCredential.delete(credential);
    if (known.user === undefined) known.user = user;
    if (!known.clients.includes(client)) {
      if (known.clients.length >= CLIENTS_PER_CREDENTIAL) known.clients.shift();
      known.clients.push(client);
    }
    while (this.byCredential.size >= this.maxCredentials) {
      const oldest = this.byCredential.keys().next().value;
      if (oldest === undefined) break;
      this.byCredential.delete(oldest);
    }
    this.byCredential.set(credential, known);
  }

  /** The credential no longer holds (its password check failed). */
  forget(credential: string): void {
    this.byCredential.delete(credential);
  }

  /**
   * The users file changed for `users` (removed, or a new password hash): their credentials no
   * longer hold. So do those whose user is not known, if any user changed.
   */
  forgetUsers(users: readonly string[]): void {
    if (users.length === 0) return;
    const changed = new Set(users);
    for (const [credential, known] of this.byCredential) {
      if (known.user === undefined || changed.has(known.user)) this.byCredential.delete(credential);
    }
  }

  clear(): void {
    this.byCredential.clear();
  }
}
