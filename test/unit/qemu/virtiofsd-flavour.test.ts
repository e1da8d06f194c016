// The virtiofsd flavour comes from the binary's own --help. The Rust virtiofsd (1.13) does not run on
// Debian 12 (it needs glibc 2.39), so fake scripts stand in for both flavours. The Rust help lines are
// those of its usage and options as the upstream README lists them (gitlab.com/virtio-fs/virtiofsd,
// README.md "Usage": the usage line, --shared-dir, --socket-path, --fd, --cache with its policies), plus
// the `-o` compatibility option it still takes with a deprecation warning (qemu-matrix.md); the C
// lines are from Debian 12's /usr/lib/qemu/virtiofsd --help.
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { removeVirtiofsdPidFile } from '../../../src/qemu/helpers/virtiofsd.ts';
import { clearVirtiofsdFlavours, flavourOfHelp, flavourProbes, virtiofsdArgs, virtiofsdFlavour } from '../../../src/qemu/helpers/virtiofsd-flavour.ts';

const RUST_HELP = `Launch a virtiofsd backend.

Usage: virtiofsd [OPTIONS] --fd <fd>|--socket-path <socket-path> --shared-dir <shared-dir>

Options:
      --shared-dir <shared-dir>        Shared directory path
      --socket-path <socket-path>      vhost-user socket path
      --fd <fd>                        File descriptor for the listening socket
      --cache <cache>                  The caching policy the file system should use (auto, always, metadata, never) [default: auto]
  -o <compat-options>                  Options in a format compatible with the legacy implementation [deprecated]
  -h, --help                           Print help
  -V, --version                        Print version
`;

const C_HELP = `usage: /usr/lib/qemu/virtiofsd [options]

    -h   --help                print help
    -V   --version             print version
    --print-capabilities       print vhost-user.json
    -o cache=<mode>            cache mode. could be one of "auto, always, none"
                               default: auto
    -o source=PATH             shared directory tree
    --socket-path=PATH         path for the vhost-user socket
`;

const dir = mkdtempSync(join(tmpdir(), 'svmm-virtiofsd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeEach(() => clearVirtiofsdFlavours());

/** A fake virtiofsd printing `help` on `--help` (to `stream`). */
function fakeVirtiofsd(name: string, help: string, stream: 'stdout' | 'stderr' = 'stdout'): string {
  const path = join(dir, name);
  const text = join(dir, `${name}.help`);
  writeFileSync(text, help);
  writeFileSync(path, `#!/bin/sh\n[ "$1" = --help ] && exec cat ${text}${stream === 'stderr' ? ' >&2' : ''}\nexit 3\n`);
  chmodSync(path, 0o755);
  return path;
}

const share = { type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'share', sharedDir: '/srv/a,b', queueSize: 1024 } as const;

describe('virtiofsd flavour', () => {
  it('is Rust when --help lists --shared-dir, and C otherwise', async () => {
    expect(await virtiofsdFlavour(fakeVirtiofsd('rust', RUST_HELP))).toBe('rust');
    expect(await virtiofsdFlavour(fakeVirtiofsd('c', C_HELP))).toBe('c');
  });

  it('reads the help from stderr too', async () => {
    expect(await virtiofsdFlavour(fakeVirtiofsd('rust-stderr', RUST_HELP, 'stderr'))).toBe('rust');
  });

  it('takes a binary whose --help fails or says nothing for the C one (the options every version took)', async () => {
    const silent = join(dir, 'silent');
    writeFileSync(silent, '#!/bin/sh\nexit 1\n');
    chmodSync(silent, 0o755);
    expect(await virtiofsdFlavour(silent)).toBe('c');
  });

  it('does not mistake a word containing shared-dir for the option', () => {
    expect(flavourOfHelp('    -o source=PATH   (no --shared-directory-here)')).toBe('c');
    expect(flavourOfHelp('--shared-dir <dir>')).toBe('rust');
  });

  it('asks each build of a binary once, and again once the file changed (mtime)', async () => {
    const path = fakeVirtiofsd('cached', C_HELP);
    expect(await virtiofsdFlavour(path)).toBe('c');
    expect(await virtiofsdFlavour(path)).toBe('c');
    expect(flavourProbes.count).toBe(1);
    // An upgrade to the Rust daemon at the same path.
    writeFileSync(join(dir, 'cached.help'), RUST_HELP);
    const later = new Date(Date.now() + 60_000);
    utimesSync(path, later, later);
    expect(await virtiofsdFlavour(path)).toBe('rust');
    expect(flavourProbes.count).toBe(2);
  });
});

describe('virtiofsd arguments', () => {
  it('are --shared-dir and --cache for the Rust virtiofsd, each value its own argument', () => {
    expect(virtiofsdArgs(share, '/run/vm/fs0.sock', 'rust')).toEqual(['--socket-path=/run/vm/fs0.sock', '--shared-dir', '/srv/a,b', '--cache', 'auto']);
  });

  it('name the Rust daemon cache policy "never" where the config says "none"', () => {
    expect(virtiofsdArgs({ ...share, cache: 'none' }, '/s', 'rust')).toEqual(['--socket-path=/s', '--shared-dir', '/srv/a,b', '--cache', 'never']);
    expect(virtiofsdArgs({ ...share, cache: 'always' }, '/s', 'rust')).toContain('always');
  });

  it('stay -o source=…,cache=… for the C virtiofsd', () => {
    expect(virtiofsdArgs({ ...share, cache: 'none' }, '/run/vm/fs0.sock', 'c')).toEqual(['--socket-path=/run/vm/fs0.sock', '-o', 'source=/srv/a,b', '-o', 'cache=none']);
  });
});

describe('the Rust virtiofsd pid file (<socket>.pid beside the socket)', () => {
  it('is removed with the daemon', () => {
    const vmDir = mkdtempSync(join(dir, 'vm-'));
    const socket = join(vmDir, 'fs-fs0.sock');
    writeFileSync(`${socket}.pid`, '4242\n');
    removeVirtiofsdPidFile(socket);
    expect(existsSync(`${socket}.pid`)).toBe(false);
  });

  it('is only removed when it is a regular file: a symlink or directory there is left alone (never followed)', () => {
    const vmDir = mkdtempSync(join(dir, 'vm-'));
    const target = join(dir, 'precious');
    writeFileSync(target, 'keep');
    const socket = join(vmDir, 'fs-fs0.sock');
    symlinkSync(target, `${socket}.pid`);
    removeVirtiofsdPidFile(socket);
    expect(lstatSync(`${socket}.pid`).isSymbolicLink()).toBe(true);
    expect(existsSync(target)).toBe(true);
    const other = join(vmDir, 'fs-fs1.sock');
    mkdirSync(`${other}.pid`);
    removeVirtiofsdPidFile(other);
    expect(lstatSync(`${other}.pid`).isDirectory()).toBe(true);
  });
});
