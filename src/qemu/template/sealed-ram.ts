// One sealed in-memory copy of a template's RAM, shared by the clones of it this process runs, for
// QEMUs that open their RAM file read-write whatever the mapping (before 8.2, see ram.ts). Each
// clone maps the copy privately: clones share every page they only read, and the seals (no write,
// no resize, no further seal) keep the copy as the template saved it, whatever a clone's QEMU does
// with the fd it inherits. Node has no memfd_create: native/svmm-memfd.c makes the copy and holds
// it until we have opened it through /proc.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, open, readlink, type FileHandle } from 'node:fs/promises';
import { HelperError } from '../../hypervisor/errors.ts';
import { builtHelperPath, nativeHelperProblem } from '../../util/native-helper.ts';

/** A clone's hold on the copy: `fd` is inherited by its QEMU; release once the clone has stopped. */
export interface SealedRamLease {
  readonly fd: number;
  release(): Promise<void>;
}

interface Copy {
  readonly file: Promise<FileHandle>;
  holders: number;
}

/** By the RAM file's identity: a template saved again (a new file) gets a copy of its own. */
const copies = new Map<string, Copy>();

const HELPER = 'svmm-memfd';
/** The helper's stderr kept for its error. */
const STDERR_CAP = 2048;

/**
 * The copy of `ramPath` (made now if no clone holds one), held until the lease is released; the
 * last release closes it, and its pages go with the last QEMU that maps them. `deviceId` is the
 * RAM's backend, named by a HelperError. The copy is shared, so `signal` ends this wait only.
 */
export async function leaseSealedRam(ramPath: string, deviceId: string, signal?: AbortSignal): Promise<SealedRamLease> {
  signal?.throwIfAborted();
  const stat = await lstat(ramPath);
  const key = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  let copy = copies.get(key);
  if (!copy) {
    const made: Copy = { file: makeSealedCopy(ramPath, stat.size, deviceId), holders: 0 };
    copies.set(key, made);
    // A failed copy is not kept: the next clone tries again.
    made.file.catch(() => copies.get(key) === made && copies.delete(key));
    copy = made;
  }
  const held = copy;
  held.holders += 1;
  let file: FileHandle;
  try {
    file = await untilAborted(held.file, signal);
  } catch (error) {
    await dropHolder(key, held);
    throw error;
  }
  let released = false;
  return {
    fd: file.fd,
    release: async () => {
      if (released) return;
      released = true;
      await dropHolder(key, held);
    },
  };
}

/** The last holder gone: the copy is forgotten and our fd closed (QEMUs keep theirs). */
async function dropHolder(key: string, copy: Copy): Promise<void> {
  copy.holders -= 1;
  if (copy.holders > 0) return;
  if (copies.get(key) === copy) copies.delete(key);
  const file = await copy.file.catch(() => undefined);
  await file?.close();
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** How many copies this process holds (for tests: none once every clone stopped). */
export function sealedRamCopies(): number {
  return copies.size;
}

async function makeSealedCopy(ramPath: string, size: number, deviceId: string): Promise<FileHandle> {
  const helper = builtHelperPath(HELPER);
  const problem = helper === undefined ? `no sandbox-vmm package.json above this module, so build/${HELPER} cannot be found` : nativeHelperProblem(HELPER, helper, false);
  if (problem || helper === undefined) throw new HelperError(HELPER, deviceId, `cannot copy the template's RAM: ${problem ?? 'not found'}`);
  const child = spawn(helper, [ramPath, 'svmm-template'], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
  // Killed before it read our close: the pipe's error is not ours to report.
  child.stdin.on('error', () => undefined);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-STDERR_CAP)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, sig) => resolve({ code, signal: sig })));
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
  spawnError.catch(() => undefined);
  const failed = async (what: string, cause?: unknown): Promise<never> => {
    child.kill('SIGKILL');
    const exit = await exited;
    throw new HelperError(HELPER, deviceId, what, { exitCode: exit.code ?? undefined, signal: exit.signal ?? undefined, stderrTail: stderr, cause });
  };
  let line: string;
  try {
    line = await Promise.race([firstLine(child.stdout), spawnError]);
  } catch (error) {
    return failed('could not copy the template\'s RAM', error);
  }
  if (line !== `ready ${size}`) return failed(`could not copy the template's RAM (it said ${JSON.stringify(line)})`);
  let file: FileHandle | undefined;
  try {
    // The helper waits on its stdin until we hold the copy; it is ours, run by us: not a path QEMU controls.
    file = await open(`/proc/${child.pid}/fd/3`, constants.O_RDONLY);
    const target = await readlink(`/proc/self/fd/${file.fd}`);
    if (!target.startsWith('/memfd:')) throw new Error(`fd 3 of ${HELPER} is ${target}, not a memfd`);
  } catch (error) {
    await file?.close();
    return failed('made a copy this process could not open', error);
  }
  child.stdin.end();
  const exit = await exited;
  if (exit.code !== 0) {
    await file.close();
    throw new HelperError(HELPER, deviceId, 'failed after the copy was made', { exitCode: exit.code ?? undefined, signal: exit.signal ?? undefined, stderrTail: stderr });
  }
  return file;
}

/** The first line on `stream`, without its newline; rejects if the stream ends first. */
function firstLine(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer | string): void => {
      text += String(chunk);
      const end = text.indexOf('\n');
      if (end >= 0) {
        cleanup();
        resolve(text.slice(0, end));
      }
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`the helper ended without a line (got ${JSON.stringify(text)})`));
    };
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
  });
}
