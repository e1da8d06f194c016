// A host-wide exclusive lock that only root can take and that the kernel releases when its holder
// dies: flock(2) on a file in the root-only lease directory. Node has no flock, so util-linux's
// `flock` holds it for us: `flock -x <file> cat` takes the lock, then runs cat, which echoes what
// we write (the proof the lock is held) and exits when we close its stdin (or when we die), which
// releases it. An abstract unix socket (used before) needs no spawn but has no permissions: any
// process in the network namespace, an escaped QEMU included, could bind its name and stall
// every VM's creation.
//
// A burst of callers in this process shares one holder: the lock is kept LINGER_MS after each use
// and handed to the next caller (callers of one process are already queued one at a time).
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { Deadline } from '../../util/deadline.ts';

/** How long a held lock waits for this process's next caller before it is released. */
const LINGER_MS = 25;
/** util-linux, resolved once: root never looks a name up in PATH. */
const FLOCK = '/usr/bin/flock';
const CAT = '/bin/cat';

interface Holder {
  child: ChildProcess;
  held: Promise<void>;
  linger: NodeJS.Timeout | undefined;
}

const holders = new Map<string, Holder>();

/**
 * Holds the lock on `file` for `body`. Callers of one process must not overlap for the same file
 * (the lease store queues them); `wait` bounds the wait for another process to let go.
 */
export async function withFileLock<T>(file: string, wait: Deadline, body: () => Promise<T>): Promise<T> {
  let holder = holders.get(file);
  if (holder) {
    clearTimeout(holder.linger);
    setRef(holder, true);
  } else {
    holder = startHolder(file);
    holders.set(file, holder);
  }
  try {
    await wait.race(holder.held);
  } catch (error) {
    // Never held, or the wait ran out: this holder must not take the lock later, unused.
    drop(file, holder);
    throw error;
  }
  try {
    return await body();
  } finally {
    const kept = holder;
    kept.linger = setTimeout(() => drop(file, kept), LINGER_MS);
    // Lingering, the holder must not keep this process alive (in use, it must).
    kept.linger.unref();
    setRef(kept, false);
  }
}

function startHolder(file: string): Holder {
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
  held.catch(() => {});
  child.stdin?.write('x');
  return { child, held, linger: undefined };
}

type Refable = (Readable | Writable) & { ref?: () => void; unref?: () => void };

function setRef(holder: Holder, on: boolean): void {
  const { child } = holder;
  if (on) child.ref();
  else child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr] as (Refable | null)[]) {
    if (on) stream?.ref?.();
    else stream?.unref?.();
  }
}

/** Releases the lock, or abandons the wait for it: flock is killed (the kernel drops its lock), cat sees EOF. */
function drop(file: string, holder: Holder): void {
  clearTimeout(holder.linger);
  if (holders.get(file) === holder) holders.delete(file);
  holder.child.stdin?.end();
  holder.child.kill('SIGKILL');
}
