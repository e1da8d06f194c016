// File primitives for paths that an unprivileged process may control. The library runs as root and
// works in per-VM runtime directories that QEMU (running as another user) can write, so a plain
// writeFileSync/readFileSync/rmSync there could be turned against it: a symlink planted at a name
// redirects a root write or delete anywhere, a FIFO blocks a read forever, a huge file exhausts
// memory. Everything here refuses to follow a symlink in the last path component, never opens
// anything but a regular file for reading, and bounds what it reads. Only the last component is
// guarded: the directories above it must be trusted (see ensureTrustedDir).
//
// Node has no openat/unlinkat/fdopendir, so removeTree works on path names: it checks with lstat
// before and after reading each directory that it is still the same real directory, which narrows
// but cannot close the window in which a process that can still write the tree swaps a directory
// for a symlink. Callers therefore remove a tree only once every process of the tree's owner is
// gone (that is how the library uses it), or trees only root can write.
import { randomBytes } from 'node:crypto';
import {
  close as closeCallback,
  closeSync,
  constants,
  fchmod as fchmodCallback,
  fchmodSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  open as openCallback,
  openSync,
  readdirSync,
  readSync,
  rename as renameCallback,
  renameSync,
  rmdirSync,
  unlink as unlinkCallback,
  unlinkSync,
  write as writeCallback,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { lstat, open, readdir, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { SandboxVmmError, type SandboxVmmErrorOptions } from '../errors.ts';

/** A path that is not what the library requires (a symlink, the wrong owner or mode, not a regular file…). */
export class UnsafePathError extends SandboxVmmError<'UNSAFE_PATH'> {
  readonly path: string;
  /** What is wrong with it, e.g. "is a symlink, not a regular file". */
  readonly problem: string;

  constructor(path: string, problem: string, options: SandboxVmmErrorOptions = {}) {
    super('UNSAFE_PATH', `unsafe path ${path}: ${problem}`, options);
    this.path = path;
    this.problem = problem;
  }
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY, O_DIRECTORY } = constants;
// O_NONBLOCK: opening a FIFO for reading must not wait for a writer. O_NOCTTY: a terminal swapped
// in must not become our controlling tty.
const READ_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
const NEW_FILE_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;
const CHUNK = 64 * 1024;
const DEFAULT_TAIL_BYTES = 8 * 1024;

function errorCode(error: unknown): unknown {
  return (error as NodeJS.ErrnoException | null)?.code;
}

function ignoreMissing(error: unknown): void {
  if (errorCode(error) !== 'ENOENT') throw error;
}

/** What a file is, in words: 'a regular file', 'a symlink', 'a FIFO'… */
export function kindOf(stats: Stats): string {
  if (stats.isFile()) return 'a regular file';
  if (stats.isSymbolicLink()) return 'a symlink';
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

function sameFile(a: Stats, b: Stats): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

// ---------------------------------------------------------------------------------------------
// Trusted directories

export interface TrustedDirOptions {
  /** Mode to create the directory with (set exactly, whatever the umask). */
  mode: number;
  /** Create the directory when missing (default true); without it a missing one throws ENOENT. */
  create?: boolean;
  /** Require the mode bits to equal `mode` exactly. */
  exactMode?: boolean;
  /**
   * The uid that must own it (default: this process's euid). A directory created here belongs to
   * the euid, so a directory meant for another user is chowned by the caller and checked again.
   */
  owner?: number;
  /** Require no permission bits at all for others. */
  exclusive?: boolean;
}

/**
 * `dir` opened without following a link, so that what is checked (and chmod'ed) is what sits at
 * `dir`, not whatever a link points at; undefined when it is missing and `missingOk`.
 */
function openTrustedDir(dir: string, missingOk: false): number;
function openTrustedDir(dir: string, missingOk: boolean): number | undefined;
function openTrustedDir(dir: string, missingOk: boolean): number | undefined {
  try {
    return openSync(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' && missingOk) return undefined;
    if (code !== 'ELOOP' && code !== 'ENOTDIR') throw error;
    throw new UnsafePathError(dir, `is ${kindOf(lstatSync(dir))}, not a directory`, { cause: error });
  }
}

/**
 * Creates `dir` (one level; its parent must exist) with `mode` if missing, then checks that it is
 * a real directory, not a symlink, owned by the euid (or `owner`), not writable by group or
 * others, and (`exclusive`) closed to others, with exactly `mode` when `exactMode`. Returns its
 * Stats; throws UnsafePathError.
 */
export function ensureTrustedDir(dir: string, options: TrustedDirOptions): Stats {
  let created = false;
  // Opened first, made only when missing: this runs for every VM a runtime creates, and a mkdir
  // that fails with EEXIST costs a thrown error each time.
  let fd = openTrustedDir(dir, options.create ?? true);
  if (fd === undefined) {
    try {
      mkdirSync(dir, { mode: options.mode });
      created = true;
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error;
    }
    fd = openTrustedDir(dir, false);
  }
  try {
    // mkdir's mode passed through the umask; set what was asked for.
    if (created) fchmodSync(fd, options.mode);
    const stats = fstatSync(fd);
    const owner = options.owner ?? process.geteuid?.() ?? 0;
    const bits = stats.mode & 0o7777;
    if (stats.uid !== owner) throw new UnsafePathError(dir, `is owned by uid ${stats.uid}, not ${owner}`);
    if ((bits & 0o022) !== 0) throw new UnsafePathError(dir, `mode ${octal(bits)} is writable by group or others`);
    if (options.exclusive && (bits & 0o007) !== 0) {
      throw new UnsafePathError(dir, `mode ${octal(bits)} gives others access`);
    }
    if (options.exactMode && bits !== options.mode) {
      throw new UnsafePathError(dir, `mode ${octal(bits)} is not ${octal(options.mode)}`);
    }
    return stats;
  } finally {
    closeSync(fd);
  }
}

/**
 * Why a directory seen by lstat is not one only its owners can change, or undefined: a real
 * directory (a symlink is not), owned by one of `owners` (default: this process's euid), writable
 * by no one else, unless `allowSticky` and it is sticky like /tmp (others then cannot rename or
 * remove what its owners put there).
 */
export function directoryProblem(stats: Stats, options: { owners?: readonly number[]; allowSticky?: boolean } = {}): string | undefined {
  const euid = process.geteuid?.() ?? 0;
  const owners = options.owners ?? [euid];
  if (!stats.isDirectory()) return 'is not a directory (a symlink is refused)';
  if (!owners.includes(stats.uid)) return `is owned by uid ${stats.uid}, not by ${owners.map((uid, i) => (uid === euid && (i === 0 || uid !== 0) ? 'us' : uid === 0 ? 'root' : `uid ${uid}`)).join(' or ')}`;
  const sticky = (stats.mode & 0o1000) !== 0;
  if ((stats.mode & 0o022) !== 0 && !(options.allowSticky && sticky)) {
    return `is writable by others (mode ${(stats.mode & 0o7777).toString(8)})${options.allowSticky ? ' without the sticky bit' : ''}`;
  }
  return undefined;
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

// Random, so that a name planted in advance cannot be guessed; O_EXCL|O_NOFOLLOW, so that a planted
// name (guessed or not) makes the write fail instead of going through it.
function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
}

/**
 * Writes `data` to `path` through a new temp file in the same directory renamed over it, so a
 * reader sees the old or the new content, and a symlink at `path` is replaced, not followed. The
 * file gets `mode` (default 0600) exactly, whatever the umask. Not fsync'ed: atomic for readers,
 * not durable across a crash (runtime directories are tmpfs).
 */
export function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  // Callback fs, not fs/promises: a start storm writes a few of these per VM, and a FileHandle per
  // write costs the event loop about twice the callbacks' work (no syscall more or less).
  const tmp = tempPathFor(path);
  const bytes = Buffer.from(data);
  return new Promise((resolve, reject) => {
    const fail = (error: Error) => unlinkCallback(tmp, () => reject(error));
    openCallback(tmp, NEW_FILE_FLAGS, 0o600, (openError, fd) => {
      if (openError) return reject(openError);
      const written = (writeError: NodeJS.ErrnoException | null) =>
        closeCallback(fd, (closeError) => {
          const error = writeError ?? closeError;
          if (error) return fail(error);
          renameCallback(tmp, path, (renameError) => (renameError ? fail(renameError) : resolve()));
        });
      // The exact mode through the open fd, whatever the umask.
      if (mode === 0o600) writeAll(fd, bytes, 0, written);
      else fchmodCallback(fd, mode, (chmodError) => (chmodError ? written(chmodError) : writeAll(fd, bytes, 0, written)));
    });
  });
}

/** Writes `bytes` from `offset` on, however many short writes that takes. */
function writeAll(fd: number, bytes: Buffer, offset: number, done: (error: NodeJS.ErrnoException | null) => void): void {
  if (offset >= bytes.length) return done(null);
  writeCallback(fd, bytes, offset, bytes.length - offset, null, (error, written) => (error ? done(error) : writeAll(fd, bytes, offset + written, done)));
}

export function writeFileAtomicSync(path: string, data: string): void {
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, NEW_FILE_FLAGS, 0o600);
  try {
    try {
      writeFileSync(fd, data);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (error) {
    try {
      unlinkSync(tmp);
    } catch {
      // Already gone, or never ours to remove: the original error is what matters.
    }
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Bounded reads of regular files

// lstat first, so that nothing but a regular file is ever opened (opening a device can have
// effects); then fstat, to catch a swap between the two.
function checkRegular(path: string, before: Stats): void {
  if (!before.isFile()) throw new UnsafePathError(path, `is ${kindOf(before)}, not a regular file`);
}

function checkOpened(path: string, before: Stats, after: Stats): void {
  if (!after.isFile() || !sameFile(before, after)) throw new UnsafePathError(path, 'changed while being opened');
}

// ELOOP: a symlink swapped in after lstat; ENXIO: a socket swapped in.
function swappedOnOpen(path: string, error: unknown): unknown {
  const code = errorCode(error);
  return code === 'ELOOP' || code === 'ENXIO' ? new UnsafePathError(path, 'changed while being opened', { cause: error }) : error;
}

function openRegularSync(path: string): { fd: number; stats: Stats } {
  const before = lstatSync(path);
  checkRegular(path, before);
  let fd: number;
  try {
    fd = openSync(path, READ_FLAGS);
  } catch (error) {
    throw swappedOnOpen(path, error);
  }
  try {
    const stats = fstatSync(fd);
    checkOpened(path, before, stats);
    return { fd, stats };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

async function openRegular(path: string): Promise<{ handle: FileHandle; stats: Stats }> {
  const before = await lstat(path);
  checkRegular(path, before);
  let handle: FileHandle;
  try {
    handle = await open(path, READ_FLAGS);
  } catch (error) {
    throw swappedOnOpen(path, error);
  }
  try {
    const stats = await handle.stat();
    checkOpened(path, before, stats);
    return { handle, stats };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

// Reads up to `limit` bytes from `start`, in chunks, so that memory follows what the file holds,
// not the limit.
function readRangeSync(fd: number, start: number, limit: number): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < limit) {
    const chunk = Buffer.allocUnsafe(Math.min(CHUNK, limit - total));
    const n = readSync(fd, chunk, 0, chunk.length, start + total);
    if (n === 0) break;
    chunks.push(chunk.subarray(0, n));
    total += n;
  }
  return Buffer.concat(chunks, total);
}

async function readRange(handle: FileHandle, start: number, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < limit) {
    const chunk = Buffer.allocUnsafe(Math.min(CHUNK, limit - total));
    const { bytesRead } = await handle.read(chunk, 0, chunk.length, start + total);
    if (bytesRead === 0) break;
    chunks.push(chunk.subarray(0, bytesRead));
    total += bytesRead;
  }
  return Buffer.concat(chunks, total);
}

// One byte more than allowed tells a file of exactly maxBytes from a larger one, even one that
// grows after fstat.
function checkSize(path: string, data: Buffer, maxBytes: number): string {
  if (data.length > maxBytes) throw new UnsafePathError(path, `is larger than ${maxBytes} bytes`);
  return data.toString('utf8');
}

/**
 * The content of the regular file at `path`, as UTF-8, of at most `maxBytes`. A symlink, FIFO,
 * socket, device, directory or larger file throws UnsafePathError; a missing file throws Node's
 * ENOENT error.
 */
export async function readRegularFile(path: string, maxBytes: number): Promise<string> {
  const { handle } = await openRegular(path);
  try {
    return checkSize(path, await readRange(handle, 0, maxBytes + 1), maxBytes);
  } finally {
    await handle.close();
  }
}

export function readRegularFileSync(path: string, maxBytes: number): string {
  const { fd } = openRegularSync(path);
  try {
    return checkSize(path, readRangeSync(fd, 0, maxBytes + 1), maxBytes);
  } finally {
    closeSync(fd);
  }
}

// A window that starts inside a multi-byte character begins with continuation bytes (10xxxxxx):
// drop them rather than decode them to U+FFFD.
function decodeTail(data: Buffer, cut: boolean): string {
  let skip = 0;
  if (cut) while (skip < 3 && skip < data.length && ((data[skip] ?? 0) & 0xc0) === 0x80) skip += 1;
  return data.subarray(skip).toString('utf8');
}

/**
 * The last `maxBytes` of the regular file at `path`, as UTF-8. '' when the file is missing, is not
 * a regular file or cannot be read: it feeds diagnostics on exit paths, which must not throw.
 */
export function readTailSync(path: string, maxBytes = DEFAULT_TAIL_BYTES): string {
  let opened: { fd: number; stats: Stats };
  try {
    opened = openRegularSync(path);
  } catch {
    return '';
  }
  try {
    const start = Math.max(0, opened.stats.size - maxBytes);
    return decodeTail(readRangeSync(opened.fd, start, maxBytes), start > 0);
  } catch {
    return '';
  } finally {
    closeSync(opened.fd);
  }
}

export async function readTail(path: string, maxBytes = DEFAULT_TAIL_BYTES): Promise<string> {
  let opened: { handle: FileHandle; stats: Stats };
  try {
    opened = await openRegular(path);
  } catch {
    return '';
  }
  try {
    const start = Math.max(0, opened.stats.size - maxBytes);
    return decodeTail(await readRange(opened.handle, start, maxBytes), start > 0);
  } catch {
    return '';
  } finally {
    await opened.handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Exclusive creation

/**
 * Creates a new file for appending and returns its fd. Anything already at `path`, a dangling
 * symlink included, is an error (EEXIST), so the fd is always a file this call made. `mode` is
 * subject to the umask, as with open(2).
 */
export function createExclusiveSync(path: string, mode = 0o600): number {
  return openSync(path, NEW_FILE_FLAGS | O_APPEND, mode);
}

// ---------------------------------------------------------------------------------------------
// Tree removal

function checkDirBefore(path: string, stats: Stats, top: Stats): void {
  // Another filesystem below the top is a mount point: its content is not the tree's to delete.
  if (stats.dev !== top.dev) throw new UnsafePathError(path, 'is a mount point inside the tree being removed');
}

// readdir follows a symlink: if the directory was swapped for one after lstat, what was listed
// belongs elsewhere, and nothing listed may be removed.
function checkDirAfter(path: string, before: Stats, after: Stats): void {
  if (!after.isDirectory() || !sameFile(before, after)) {
    throw new UnsafePathError(path, 'was replaced while being removed');
  }
}

function removeDirSync(dir: string, stats: Stats, top: Stats): void {
  checkDirBefore(dir, stats, top);
  const names = readdirSync(dir);
  checkDirAfter(dir, stats, lstatSync(dir));
  for (const name of names) {
    const entry = join(dir, name);
    let entryStats: Stats;
    try {
      entryStats = lstatSync(entry);
    } catch (error) {
      ignoreMissing(error);
      continue;
    }
    if (entryStats.isDirectory()) removeDirSync(entry, entryStats, top);
    else unlinkMissingOkSync(entry);
  }
  try {
    rmdirSync(dir);
  } catch (error) {
    ignoreMissing(error);
  }
}

function unlinkMissingOkSync(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    ignoreMissing(error);
  }
}

/**
 * Removes `path` and everything under it without following a symlink: a symlink (at the top too)
 * is unlinked, never its target. A mount point inside the tree or a directory replaced while being
 * removed throws UnsafePathError. A missing path is a no-op. See the header for the race this
 * narrows but cannot close.
 */
export function removeTreeSync(path: string): void {
  let top: Stats;
  try {
    top = lstatSync(path);
  } catch (error) {
    ignoreMissing(error);
    return;
  }
  if (top.isDirectory()) removeDirSync(path, top, top);
  else unlinkMissingOkSync(path);
}

async function removeDir(dir: string, stats: Stats, top: Stats): Promise<void> {
  checkDirBefore(dir, stats, top);
  const names = await readdir(dir);
  checkDirAfter(dir, stats, await lstat(dir));
  for (const name of names) {
    const entry = join(dir, name);
    let entryStats: Stats;
    try {
      entryStats = await lstat(entry);
    } catch (error) {
      ignoreMissing(error);
      continue;
    }
    if (entryStats.isDirectory()) await removeDir(entry, entryStats, top);
    else await unlink(entry).catch(ignoreMissing);
  }
  await rmdir(dir).catch(ignoreMissing);
}

export async function removeTree(path: string): Promise<void> {
  let top: Stats;
  try {
    top = await lstat(path);
  } catch (error) {
    ignoreMissing(error);
    return;
  }
  if (top.isDirectory()) await removeDir(path, top, top);
  else await unlink(path).catch(ignoreMissing);
}
