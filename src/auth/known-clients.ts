// Which client addresses have logged in successfully with which credential, for the whole proxy
// (--workers): the "known client" exemption from failed-login limits. Each worker's cache of
// verified credentials remembers the same for the credentials it holds; this record is the one
// that a worker which has not seen the client yet asks while the name or address is locked.
//
// Only a successful login adds to it, so nobody grows it without a valid password. Bounded all
// the same: at most `maxCredentials` credentials, the least recently used dropped first, and a
// few clients each (a user's laptop, CI, a second kubeconfig...), the oldest dropped first.

/** As BasicAuthenticator remembers per cached credential. */
const CLIENTS_PER_CREDENTIAL = 8;

export class KnownClients {
  /** Insertion-ordered: the first key is the least recently used. */
  private readonly byCredential = new Map<string, string[]>();

  constructor(private readonly maxCredentials = 50_000) {}

  get size(): number {
    return this.byCredential.size;
  }

  has(credential: string, client: string): boolean {
    return this.byCredential.get(credential)?.includes(client) === true;
  }

  add(credential: string, client: string): void {
    const clients = this.byCredential.get(credential) ?? [];
    this.byCredential.delete(credential);
    if (!clients.includes(client)) {
      if (clients.length >= CLIENTS_PER_CREDENTIAL) clients.shift();
      clients.push(client);
    }
    while (this.byCredential.size >= this.maxCredentials) {
      const oldest = this.byCredential.keys().next().value;
      if (oldest === undefined) break;
      this.byCredential.delete(oldest);
    }
    this.byCredential.set(credential, clients);
  }

  clear(): void {
    this.byCredential.clear();
  }
}
