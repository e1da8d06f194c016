// The safe file primitives against what a compromised, unprivileged QEMU could plant in its runtime
// directory: symlinks (to canary files and directories outside the tree, which must stay intact),
// FIFOs, sockets, oversize files, swapped directories and mount points.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isSandboxVmmError } from '../../../src/errors.ts';
import {
  createExclusiveSync,
  directoryProblem,
  ensureTrustedDir,
  readRegularFile,
  readRegularFileSync,
  readTail,
  readTailSync,
  removeTree,
  removeTreeSync,
  UnsafePathError,
  writeFileAtomic,
  writeFileAtomicSync,
} from '../../../src/util/safe-fs.ts';

// Hooks into the module's fs and crypto calls: a fixed temp-name suffix, an action run just before
// a directory is listed or just after a path is lstat'ed (to swap it under the module's feet), a
// path whose lstat reports another device (a mount point, which a test cannot make for real), and
// a record of every path opened.
const hooks = vi.hoisted(() => ({
  tempSuffix: undefined as Buffer | undefined,
  beforeReaddir: undefined as ((path: string) => void) | undefined,
  afterLstat: undefined as ((path: string) => void) | undefined,
  otherDevice: undefined as string | undefined,
  opened: [] as string[],
}));

function adjustStats<T>(path: string, stats: T): T {
  hooks.afterLstat?.(path);
  if (path !== hooks.otherDevice || stats === undefined) return stats;
  const real = stats as Stats;
  return Object.assign(Object.create(Object.getPrototypeOf(real) as object) as Stats, real, { dev: real.dev + 1 }) as T;
}

vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return {
    ...real,
    randomBytes: ((...args: Parameters<typeof real.randomBytes>) => hooks.tempSuffix ?? real.randomBytes(...args)) as typeof real.randomBytes,
  };
});

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    readdirSync: ((...args: Parameters<typeof real.readdirSync>) => {
      hooks.beforeReaddir?.(String(args[0]));
      return real.readdirSync(...args);
    }) as typeof real.readdirSync,
    lstatSync: ((...args: Parameters<typeof real.lstatSync>) =>
      adjustStats(String(args[0]), real.lstatSync(...args))) as typeof real.lstatSync,
    openSync: ((...args: Parameters<typeof real.openSync>) => {
      hooks.opened.push(String(args[0]));
      return real.openSync(...args);
    }) as typeof real.openSync,
  };
});

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    readdir: ((...args: Parameters<typeof real.readdir>) => {
      hooks.beforeReaddir?.(String(args[0]));
      return real.readdir(...args);
    }) as typeof real.readdir,
    lstat: (async (...args: Parameters<typeof real.lstat>) =>
      adjustStats(String(args[0]), await real.lstat(...args))) as typeof real.lstat,
    open: ((...args: Parameters<typeof real.open>) => {
      hooks.opened.push(String(args[0]));
      return real.open(...args);
    }) as typeof real.open,
  };
});

// A sync function as a promise, so that async and sync twins share one set of tests.
function promised<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => Promise<R> {
  return (...args) => new Promise<R>((resolve) => resolve(fn(...args)));
}

let root: string;
let outside: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'safe-fs-'));
  // Canaries: what a planted symlink points at. No test may change them.
  outside = join(root, 'outside');
  mkdirSync(join(outside, 'sub'), { recursive: true });
  writeFileSync(join(outside, 'canary.txt'), 'canary');
  writeFileSync(join(outside, 'sub', 'deep.txt'), 'deep canary');
});

afterEach(() => {
  hooks.tempSuffix = undefined;
  hooks.beforeReaddir = undefined;
  hooks.afterLstat = undefined;
  hooks.otherDevice = undefined;
  hooks.opened = [];
  rmSync(root, { recursive: true, force: true });
});

function expectCanariesIntact(): void {
  expect(readFileSync(join(outside, 'canary.txt'), 'utf8')).toBe('canary');
  expect(readFileSync(join(outside, 'sub', 'deep.txt'), 'utf8')).toBe('deep canary');
  expect(readdirSync(outside).sort()).toEqual(['canary.txt', 'sub']);
}

function mkfifo(path: string): void {
  const result = spawnSync('mkfifo', [path]);
  expect(result.status).toBe(0);
}

async function listenUnix(path: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return server;
}

async function closeServer(server: Server): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

// Once `path` has been lstat'ed (as a regular file), replaces it by what `plant` puts there: the
// window between the module's lstat and its open.
function swapAfterLstat(path: string, plant: () => void): void {
  hooks.afterLstat = (lstated) => {
    if (lstated !== path) return;
    hooks.afterLstat = undefined;
    rmSync(path);
    plant();
  };
}

const modulePath = fileURLToPath(new URL('../../../src/util/safe-fs.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

// Runs one function of the module on `path` in a child process. A read that blocks on a FIFO
// blocks the whole thread (a sync one never lets a test timeout fire), so a hang is caught here as
// a killed child instead of a stuck test run.
function probeInChild(fn: string, path: string): { value?: string; code?: string } {
  const script = `
    const m = await import(${JSON.stringify(pathToFileURL(modulePath).href)});
    try { console.log(JSON.stringify({ value: await m[${JSON.stringify(fn)}](${JSON.stringify(path)}, 1024) })); }
    catch (error) { console.log(JSON.stringify({ code: error.code })); }`;
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 8_000,
  });
  expect(result.signal, `${fn} hung on ${path}`).toBeNull();
  expect(result.status, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as { value?: string; code?: string };
}

describe('UnsafePathError', () => {
  it('is a typed library error naming the path', () => {
    const error = new UnsafePathError('/run/x', 'is a symlink');
    expect(error).toBeInstanceOf(UnsafePathError);
    expect(isSandboxVmmError(error)).toBe(true);
    expect(error.code).toBe('UNSAFE_PATH');
    expect(error.path).toBe('/run/x');
    expect(error.name).toBe('UnsafePathError');
    expect(error.message).toContain('/run/x');
    expect(error.message).toContain('is a symlink');
  });
});

describe('writeFileAtomic with a mode', () => {
  it('gives the file exactly that mode, whatever the umask (0666 survives a umask of 022)', async () => {
    const target = join(root, 'template.json');
    await writeFileAtomic(target, '{}', 0o666);
    expect(statSync(target).mode & 0o777).toBe(0o666);
    await writeFileAtomic(target, '{}', 0o644);
    expect(statSync(target).mode & 0o777).toBe(0o644);
  });
});

describe.each([
  { name: 'writeFileAtomic', write: writeFileAtomic },
  { name: 'writeFileAtomicSync', write: promised(writeFileAtomicSync) },
])('$name', ({ write }) => {
  it('creates a 0600 file with the data and leaves no temp file', async () => {
    const target = join(root, 'state.json');
    await write(target, '{"a":1}');
    expect(readFileSync(target, 'utf8')).toBe('{"a":1}');
    expect(statSync(target).mode & 0o777).toBe(0o600);
    await write(target, 'second');
    expect(readFileSync(target, 'utf8')).toBe('second');
    expect(readdirSync(root).sort()).toEqual(['outside', 'state.json']);
  });

  it('writes every byte of a large, multi-byte text', async () => {
    const target = join(root, 'state.json');
    const text = `${'é€'.repeat(200_000)}\n`;
    await write(target, text);
    expect(readFileSync(target, 'utf8')).toBe(text);
  });

  it('replaces a symlink at the target instead of writing through it', async () => {
    const target = join(root, 'state.json');
    symlinkSync(join(outside, 'canary.txt'), target);
    await write(target, 'data');
    expectCanariesIntact();
    expect(lstatSync(target).isFile()).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('data');
  });

  it('fails on a planted temp name, never writing through it or removing it', async () => {
    hooks.tempSuffix = Buffer.from('0123456789abcdef', 'hex');
    const target = join(root, 'state.json');
    const tempName = join(root, '.state.json.0123456789abcdef.tmp');

    symlinkSync(join(outside, 'canary.txt'), tempName);
    await expect(write(target, 'data')).rejects.toMatchObject({ code: 'EEXIST' });
    expectCanariesIntact();
    expect(existsSync(target)).toBe(false);
    expect(readlinkSync(tempName)).toBe(join(outside, 'canary.txt'));

    // A dangling link: O_CREAT alone would create its target.
    rmSync(tempName);
    symlinkSync(join(outside, 'created.txt'), tempName);
    await expect(write(target, 'data')).rejects.toMatchObject({ code: 'EEXIST' });
    expect(existsSync(join(outside, 'created.txt'))).toBe(false);
    expectCanariesIntact();
  });

  it('removes its temp file when the rename fails', async () => {
    const target = join(root, 'dir');
    mkdirSync(join(target, 'inside'), { recursive: true });
    await expect(write(target, 'data')).rejects.toMatchObject({ code: expect.stringMatching(/^E/) as unknown });
    expect(readdirSync(root).sort()).toEqual(['dir', 'outside']);
  });
});

describe.each([
  { name: 'readRegularFile', read: readRegularFile },
  { name: 'readRegularFileSync', read: promised(readRegularFileSync) },
])('$name', ({ name, read }) => {
  it('reads a regular file up to and including maxBytes', async () => {
    const file = join(root, 'f');
    writeFileSync(file, 'héllo');
    await expect(read(file, 6)).resolves.toBe('héllo');
    await expect(read(file, 1024)).resolves.toBe('héllo');
  });

  it('refuses a file larger than maxBytes', async () => {
    const file = join(root, 'f');
    writeFileSync(file, 'x'.repeat(100));
    await expect(read(file, 99)).rejects.toThrow(UnsafePathError);
    await expect(read(file, 99)).rejects.toThrow(/larger than 99 bytes/);
  });

  it('refuses a symlink, even to a regular file', async () => {
    const link = join(root, 'link');
    symlinkSync(join(outside, 'canary.txt'), link);
    await expect(read(link, 1024)).rejects.toMatchObject({ code: 'UNSAFE_PATH', path: link });
  });

  it('refuses a directory and a socket', async () => {
    await expect(read(outside, 1024)).rejects.toMatchObject({ code: 'UNSAFE_PATH', path: outside });
    const socket = join(root, 'sock');
    const server = await listenUnix(socket);
    try {
      await expect(read(socket, 1024)).rejects.toMatchObject({ code: 'UNSAFE_PATH', path: socket });
    } finally {
      await closeServer(server);
    }
  });

  it('refuses a FIFO without waiting for a writer', { timeout: 20_000 }, () => {
    const fifo = join(root, 'fifo');
    mkfifo(fifo);
    expect(probeInChild(name, fifo)).toEqual({ code: 'UNSAFE_PATH' });
  });

  it('never opens a symlink, directory or socket', async () => {
    const link = join(root, 'link');
    symlinkSync(join(outside, 'canary.txt'), link);
    const socket = join(root, 'sock');
    const server = await listenUnix(socket);
    try {
      for (const path of [link, outside, socket]) await expect(read(path, 1024)).rejects.toThrow(UnsafePathError);
    } finally {
      await closeServer(server);
    }
    expect(hooks.opened).toEqual([]);
  });

  it('refuses a file swapped for a symlink or another file between its lstat and its open', async () => {
    const file = join(root, 'f');
    writeFileSync(file, 'mine');
    swapAfterLstat(file, () => symlinkSync(join(outside, 'canary.txt'), file));
    await expect(read(file, 1024)).rejects.toMatchObject({ code: 'UNSAFE_PATH', path: file });

    rmSync(file);
    writeFileSync(file, 'mine');
    writeFileSync(join(root, 'other'), 'other');
    swapAfterLstat(file, () => renameSync(join(root, 'other'), file));
    await expect(read(file, 1024)).rejects.toThrow(/changed while being opened/);
  });

  it("lets a missing file's ENOENT through", async () => {
    const error: unknown = await read(join(root, 'missing'), 10).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ENOENT' });
    expect(error).not.toBeInstanceOf(UnsafePathError);
  });
});

describe('a file swapped for a FIFO between lstat and open', () => {
  // Only the async twins run in process: a sync open blocking on a FIFO would stall the test run
  // itself; the flags are the ones both twins use. A blocking open fails here by timing out.
  it('is refused by readRegularFile and gives readTail nothing, without waiting for a writer', async () => {
    const file = join(root, 'f');
    writeFileSync(file, 'mine');
    swapAfterLstat(file, () => mkfifo(file));
    await expect(readRegularFile(file, 1024)).rejects.toThrow(/changed while being opened/);
    rmSync(file);
    writeFileSync(file, 'mine');
    swapAfterLstat(file, () => mkfifo(file));
    await expect(readTail(file)).resolves.toBe('');
    expect(hooks.opened).toEqual([file, file]);
  });
});

describe.each([
  { name: 'readTail', tail: readTail },
  { name: 'readTailSync', tail: promised(readTailSync) },
])('$name', ({ name, tail }) => {
  it('returns exactly the last bytes of a big file, 8 KiB by default', async () => {
    const file = join(root, 'log');
    const lines = Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join('');
    writeFileSync(file, lines);
    expect(lines.length).toBeGreaterThan(8192);
    await expect(tail(file)).resolves.toBe(lines.slice(-8192));
    await expect(tail(file, 100)).resolves.toBe(lines.slice(-100));
    await expect(tail(file, 1_000_000)).resolves.toBe(lines);
  });

  it('drops a multi-byte character cut at the start, keeps one that is not', async () => {
    const file = join(root, 'log');
    writeFileSync(file, 'ab€end'); // € is 3 bytes: e2 82 ac
    await expect(tail(file, 5)).resolves.toBe('end'); // starts at 82
    await expect(tail(file, 4)).resolves.toBe('end'); // starts at ac
    await expect(tail(file, 6)).resolves.toBe('€end');
  });

  it("gives '' for a missing file, a symlink and a directory", async () => {
    const link = join(root, 'link');
    symlinkSync(join(outside, 'canary.txt'), link);
    await expect(tail(join(root, 'missing'))).resolves.toBe('');
    await expect(tail(link)).resolves.toBe('');
    await expect(tail(outside)).resolves.toBe('');
  });

  it("gives '' for a file swapped for a symlink between its lstat and its open", async () => {
    const file = join(root, 'log');
    writeFileSync(file, 'mine');
    swapAfterLstat(file, () => symlinkSync(join(outside, 'canary.txt'), file));
    await expect(tail(file)).resolves.toBe('');
    expect(hooks.opened).toEqual([file]);
  });

  it("gives '' for a FIFO without waiting for a writer", { timeout: 20_000 }, () => {
    const fifo = join(root, 'fifo');
    mkfifo(fifo);
    expect(probeInChild(name, fifo)).toEqual({ value: '' });
  });
});

describe('createExclusiveSync', () => {
  it('creates a new file with the mode and returns an appending fd', () => {
    const file = join(root, 'stderr.log');
    const fd = createExclusiveSync(file, 0o640);
    try {
      expect(statSync(file).mode & 0o777).toBe(0o640);
      writeSync(fd, 'abc');
      // O_APPEND: after a truncation the next write lands at the new end, not at offset 3.
      truncateSync(file, 0);
      writeSync(fd, 'd');
    } finally {
      closeSync(fd);
    }
    expect(readFileSync(file, 'utf8')).toBe('d');
    closeSync(createExclusiveSync(join(root, 'default')));
    expect(statSync(join(root, 'default')).mode & 0o777).toBe(0o600);
  });

  it('refuses an existing file, leaving it as it was', () => {
    const file = join(root, 'f');
    writeFileSync(file, 'old');
    expect(() => createExclusiveSync(file)).toThrow(expect.objectContaining({ code: 'EEXIST' }) as Error);
    expect(readFileSync(file, 'utf8')).toBe('old');
  });

  it('refuses a symlink, live or dangling, without touching its target', () => {
    const link = join(root, 'link');
    symlinkSync(join(outside, 'canary.txt'), link);
    expect(() => createExclusiveSync(link)).toThrow(expect.objectContaining({ code: 'EEXIST' }) as Error);
    const dangling = join(root, 'dangling');
    symlinkSync(join(outside, 'created.txt'), dangling);
    expect(() => createExclusiveSync(dangling)).toThrow(expect.objectContaining({ code: 'EEXIST' }) as Error);
    expect(existsSync(join(outside, 'created.txt'))).toBe(false);
    expectCanariesIntact();
  });
});

describe.each([
  { name: 'removeTree', remove: removeTree },
  { name: 'removeTreeSync', remove: promised(removeTreeSync) },
])('$name', ({ remove }) => {
  it('removes a nested tree of files, symlinks, FIFOs and sockets without following a link', async () => {
    const tree = join(root, 'tree');
    mkdirSync(join(tree, 'a', 'b', 'c'), { recursive: true });
    writeFileSync(join(tree, 'top.txt'), 'x');
    writeFileSync(join(tree, 'a', 'b', 'c', 'deep.txt'), 'x');
    symlinkSync(outside, join(tree, 'a', 'to-dir')); // followed, it would empty the canary dir
    symlinkSync(join(outside, 'sub'), join(tree, 'a', 'b', 'to-sub'));
    symlinkSync(join(outside, 'canary.txt'), join(tree, 'a', 'b', 'c', 'to-file'));
    symlinkSync(join(root, 'nowhere'), join(tree, 'dangling'));
    mkfifo(join(tree, 'a', 'fifo'));
    const server = await listenUnix(join(tree, 'a', 'b', 'sock'));
    try {
      await remove(tree);
    } finally {
      await closeServer(server);
    }
    expect(existsSync(tree)).toBe(false);
    expectCanariesIntact();
  });

  it('unlinks a symlink at the top, not what it points to', async () => {
    const link = join(root, 'link');
    symlinkSync(outside, link);
    await remove(link);
    expect(() => lstatSync(link)).toThrow(expect.objectContaining({ code: 'ENOENT' }) as Error);
    expectCanariesIntact();
  });

  it('removes a single file, and does nothing for a missing path', async () => {
    const file = join(root, 'f');
    writeFileSync(file, 'x');
    await remove(file);
    expect(existsSync(file)).toBe(false);
    await expect(remove(join(root, 'missing'))).resolves.toBeUndefined();
  });

  it('refuses a directory swapped for a symlink before it is listed, removing nothing through it', async () => {
    const tree = join(root, 'tree');
    const victim = join(tree, 'sub');
    mkdirSync(victim, { recursive: true });
    writeFileSync(join(victim, 'canary.txt'), 'x');
    // Between removeTree's lstat of `sub` and its readdir, a hostile owner swaps in a link to a
    // directory holding the same names: listed through the link, they would be removed through it.
    hooks.beforeReaddir = (path) => {
      if (path !== victim) return;
      hooks.beforeReaddir = undefined;
      renameSync(victim, join(tree, 'moved'));
      symlinkSync(outside, victim);
    };
    await expect(remove(tree)).rejects.toMatchObject({ code: 'UNSAFE_PATH', path: victim });
    expectCanariesIntact();
  });

  it('refuses to descend into a mount point', async () => {
    const tree = join(root, 'tree');
    const mount = join(tree, 'mnt');
    mkdirSync(mount, { recursive: true });
    writeFileSync(join(mount, 'other-fs.txt'), 'x');
    hooks.otherDevice = mount;
    await expect(remove(tree)).rejects.toMatchObject({ code: 'UNSAFE_PATH', path: mount });
    expect(readFileSync(join(mount, 'other-fs.txt'), 'utf8')).toBe('x');
  });
});

describe('ensureTrustedDir', () => {
  it('creates a missing directory with exactly the mode, whatever the umask', () => {
    const dir = join(root, 'run');
    const previous = process.umask(0o077);
    let stats: Stats;
    try {
      stats = ensureTrustedDir(dir, { mode: 0o711, exactMode: true });
    } finally {
      process.umask(previous);
    }
    expect(stats.isDirectory()).toBe(true);
    expect(stats.mode & 0o7777).toBe(0o711);
    expect(lstatSync(dir).mode & 0o7777).toBe(0o711);
    expect(stats.uid).toBe(process.geteuid?.());
  });

  it('accepts an existing good directory as it is, and lets a missing one be an error when create is off', () => {
    const dir = join(root, 'run');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    expect(ensureTrustedDir(dir, { mode: 0o700 }).isDirectory()).toBe(true);
    expect(lstatSync(dir).mode & 0o7777).toBe(0o755);
    expect(() => ensureTrustedDir(join(root, 'missing'), { mode: 0o700, create: false })).toThrow(
      expect.objectContaining({ code: 'ENOENT' }) as Error,
    );
    expect(existsSync(join(root, 'missing'))).toBe(false);
  });

  it('refuses a symlink to a good directory, and a file', () => {
    const good = join(root, 'good');
    mkdirSync(good, { mode: 0o700 });
    const link = join(root, 'link');
    symlinkSync(good, link);
    expect(() => ensureTrustedDir(link, { mode: 0o700 })).toThrow(UnsafePathError);
    expect(() => ensureTrustedDir(link, { mode: 0o700 })).toThrow(/symlink/);
    expect(() => ensureTrustedDir(join(outside, 'canary.txt'), { mode: 0o700 })).toThrow(UnsafePathError);
    expectCanariesIntact();
  });

  it("refuses a directory owned by another uid unless that uid is the expected owner", () => {
    const dir = join(root, 'run');
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, 65534, 65534);
    expect(() => ensureTrustedDir(dir, { mode: 0o700 })).toThrow(/owned by uid 65534/);
    expect(ensureTrustedDir(dir, { mode: 0o700, owner: 65534 }).uid).toBe(65534);
  });

  it.each([0o720, 0o702, 0o777, 0o1777])('refuses mode %o (writable by group or others)', (mode) => {
    const dir = join(root, 'run');
    mkdirSync(dir);
    chmodSync(dir, mode);
    expect(() => ensureTrustedDir(dir, { mode: 0o700 })).toThrow(expect.objectContaining({ code: 'UNSAFE_PATH', path: dir }) as Error);
  });

  it('with exclusive, refuses any access for others; with exactMode, any other mode', () => {
    const dir = join(root, 'run');
    mkdirSync(dir);
    chmodSync(dir, 0o711);
    expect(ensureTrustedDir(dir, { mode: 0o711 }).isDirectory()).toBe(true);
    expect(() => ensureTrustedDir(dir, { mode: 0o711, exclusive: true })).toThrow(/gives others access/);
    expect(() => ensureTrustedDir(dir, { mode: 0o700, exactMode: true })).toThrow(/is not 0700/);
    chmodSync(dir, 0o700);
    expect(ensureTrustedDir(dir, { mode: 0o700, exclusive: true, exactMode: true }).isDirectory()).toBe(true);
  });
});

describe('directoryProblem', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  const scratch = (mode: number, uid = 0): string => {
    const dir = mkdtempSync(join(tmpdir(), 'svmm-dirproblem-'));
    dirs.push(dir);
    chmodSync(dir, mode);
    chownSync(dir, uid, 0);
    return dir;
  };

  it('accepts our own directory closed to writers, and says what is wrong otherwise', () => {
    expect(directoryProblem(lstatSync(scratch(0o755)))).toBeUndefined();
    expect(directoryProblem(lstatSync(scratch(0o775)))).toBe('is writable by others (mode 775)');
    expect(directoryProblem(lstatSync(scratch(0o757)))).toBe('is writable by others (mode 757)');
    expect(directoryProblem(lstatSync(scratch(0o755, 65534)))).toBe('is owned by uid 65534, not by us');
    const link = join(scratch(0o755), 'link');
    symlinkSync(scratch(0o755), link);
    expect(directoryProblem(lstatSync(link))).toBe('is not a directory (a symlink is refused)');
  });

  it('accepts a sticky world-writable directory only when asked, and other owners only when named', () => {
    const sticky = scratch(0o1777);
    expect(directoryProblem(lstatSync(sticky))).toBe('is writable by others (mode 1777)');
    expect(directoryProblem(lstatSync(sticky), { allowSticky: true })).toBeUndefined();
    expect(directoryProblem(lstatSync(scratch(0o777)), { allowSticky: true })).toBe('is writable by others (mode 777) without the sticky bit');
    const other = lstatSync(scratch(0o755, 4321));
    expect(directoryProblem(other, { owners: [0, 4321] })).toBeUndefined();
    expect(directoryProblem(other, { owners: [0, 1234] })).toBe('is owned by uid 4321, not by us or uid 1234');
  });
});
