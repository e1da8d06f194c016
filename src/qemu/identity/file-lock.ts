// A host-wide exclusive lock that only root can take and that the kernel releases when its holder
// dies: flock(2) on a file in the root-only lease directory. Node has no flock, so util-linux's
// `flock` holds it for us: `flock -x --close <file> cat` takes the lock, then runs cat, which
// echoes what we write (the proof the lock is held). Killing flock releases it, and so does our
// death (cat sees EOF, flock exits). An abstract unix socket (used before) needs no spawn but has
// no permissions: any process in the network namespace, an escaped QEMU included, could bind its
// name and stall every VM's creation. Only reclaiming and taking a lease over lock (allocation
// needs no lock), so a spawn per use costs little.
import { spawn } from 'node:child_process';
import type { Deadline } from '../../util/deadline.ts';

/** util-linux, by absolute path: root never looks a name up in PATH. */
const FLOCK = '/usr/bin/flock';
const CAT = '/bin/cat';

/** Holds the lock on `file` for `body`; `wait` bounds the wait for another holder to let go. */
export async function withFileLock<T>(file: string, wait: Deadline, body: () => Promise<T>): Promise<T> {
  // --close: cat does not inherit the lock's fd, so ending flock ends the lock at once.
  const child = spawn(FLOCK, ['--exclusive', '--close', file, CAT], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
  // A broken pipe must never crash this process.
  for (const stream of [child.stdin, child.stdout, child.stderr]) stream?.on('error', () => {});
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => (stderr += chunk.slice(0, 1024)));
  const held = new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve());
    child.once('error', (error) => reject(new Error(`cannot run ${FLOCK} to lock ${file}: ${error.message}`, { cause: error })));
    child.once('exit', (code, signal) => reject(new Error(`${FLOCK} ${file} ended before it held the lock (${signal ?? `status ${String(code)}`}): ${stderr.trim()}`)));
  });
  child.stdin?.write('x');
  try {
    await wait.race(held);
    return await body();
  } finally {
    // Releases the lock, or abandons the wait for it: the kernel drops flock's lock with it.
    child.stdin?.end();
    child.kill('SIGKILL');
  }
}
