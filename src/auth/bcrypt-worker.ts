// Runs in a worker thread: one bcrypt comparison at a time, so the event loop never does one.
import bcrypt from 'bcryptjs';
import { parentPort } from 'node:worker_threads';

export interface CompareRequest {
  id: number;
  password: string;
  hash: string;
}

export interface CompareResponse {
  id: number;
  match: boolean;
}

parentPort?.on('message', (task: CompareRequest) => {
  let match = false;
  try {
    match = bcrypt.compareSync(task.password, task.hash);
  } catch {
    match = false; // a malformed hash never verifies
  }
  parentPort?.postMessage({ id: task.id, match } satisfies CompareResponse);
});
