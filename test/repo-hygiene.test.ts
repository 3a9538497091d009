// The README's walks leave secrets in the project root (a users file, kubeconfigs with a
// password or a private key): git must not offer to commit them.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { PROJECT_ROOT } from './helpers/proxy.js';

for (const file of ['users.htpasswd', 'alice.kubeconfig', 'bob.kubeconfig', 'certs/proxy.key', 'certs/users/bob.key']) {
  t.test(`${file} is ignored by git`, async (t) => {
    // check-ignore exits 0 when the path is ignored, 1 when it is not.
    const out = execFileSync('git', ['check-ignore', '--no-index', '-v', file], { cwd: PROJECT_ROOT, encoding: 'utf8' });
    t.match(out, file);
  });
}
