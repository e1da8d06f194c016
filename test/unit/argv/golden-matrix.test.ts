// Golden argv of each matrix config, built with fixed paths and a fake host probe. Run with
// UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the diff.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig } from '../../../src/hypervisor/config/index.ts';
import { buildQemuArgv, type QemuArgv } from '../../../src/qemu/argv/index.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { ARM64_MATRIX, GOLDEN_ENV, GOLDEN_RUNTIME_DIR, goldenHost, MATRICES, X86_64_MATRIX, type MatrixEntry } from '../../helpers/argv-matrix.ts';
import { structureArgv } from '../../helpers/qemu-options.ts';
import { argsFromGolden, renderGolden } from './golden-format.ts';

const GOLDEN_DIR = join(dirname(fileURLToPath(import.meta.url)), 'golden');
const UPDATE = process.env['UPDATE_GOLDEN'] === '1';
/** Both architectures' configs: one golden file each. */
const MATRIX: readonly MatrixEntry[] = [...X86_64_MATRIX, ...ARM64_MATRIX];

function build(entry: MatrixEntry): QemuArgv {
  return buildQemuArgv(parseSandboxConfig(entry.config(GOLDEN_ENV)), runtimePaths(GOLDEN_RUNTIME_DIR), goldenHost);
}

function goldenFile(entry: MatrixEntry): string {
  return join(GOLDEN_DIR, `${entry.name}.txt`);
}

describe('golden argv', () => {
  describe.each(MATRIX.map((entry) => ({ name: entry.name, entry })))('$name', ({ entry }) => {
    it('matches its golden file exactly', () => {
      const argv = build(entry);
      const text = renderGolden({ name: entry.name, description: entry.description, args: argv.args, fds: argv.fds, runtimeDir: GOLDEN_RUNTIME_DIR });
      if (UPDATE) writeFileSync(goldenFile(entry), text);
      expect(text).toBe(readFileSync(goldenFile(entry), 'utf8'));
    });

    it('the golden file gives back the argv exactly', () => {
      expect(argsFromGolden(readFileSync(goldenFile(entry), 'utf8'))).toEqual(build(entry).args);
    });

    it('names every QEMU object once and puts each PCI device at its own explicit slot, function 0', () => {
      const options = structureArgv(build(entry).args);
      const ids = (flag: string, key: string) => options.flatMap((o) => (o.flag === flag && o.props?.has(key) ? [o.props.get(key)] : []));
      for (const [flag, key] of [
        ['-device', 'id'],
        ['-chardev', 'id'],
        ['-object', 'id'],
        ['-netdev', 'id'],
        ['-fsdev', 'id'],
        ['-blockdev', 'node-name'],
      ] as const) {
        const list = ids(flag, key);
        expect(new Set(list).size, `${flag} ${key}s: ${list.join(' ')}`).toBe(list.length);
      }
      const rootBus = options.flatMap((o) => (o.flag === '-device' && o.props?.get('bus') === 'pcie.0' ? [o.props] : []));
      // A slot each: no function numbers, no multifunction devices (Kata's PCI path names slots only).
      for (const device of rootBus) expect(device.get('addr'), device.get('id')).toMatch(/^0x[0-9a-f]+$/);
      expect(rootBus.filter((d) => d.has('multifunction')).map((d) => d.get('id'))).toEqual([]);
      const addrs = rootBus.map((d) => d.get('addr'));
      expect(new Set(addrs).size).toBe(addrs.length);
    });
  });

  describe.each(MATRIX.map((entry) => ({ name: entry.name, entry })))('$name', ({ entry }) => {
    it('gives QEMU each fd the argv names, and only those: sockets to chardevs, caller fds to netdevs', () => {
      const { args, fds } = build(entry);
      const named = structureArgv(args).flatMap((o) => (o.props?.has('fd') ? [{ flag: o.flag, props: o.props, fd: Number(o.props.get('fd')) }] : []));
      expect(named.map((n) => n.fd).sort((a, b) => a - b)).toEqual(fds.map((entry) => entry.fd));
      expect(fds.map((entry) => entry.fd)).toEqual(fds.map((_, i) => 3 + i));
      for (const entry of fds) {
        const user = named.find((n) => n.fd === entry.fd);
        if (entry.kind === 'listen') {
          expect([user?.flag, user?.props.get('backend'), user?.props.get('server')], `fd ${entry.fd}`).toEqual(['-chardev', 'socket', 'on']);
          expect(entry.path.startsWith(`${GOLDEN_RUNTIME_DIR}/`), entry.path).toBe(true);
        } else {
          expect([user?.flag, user?.props.get('type')], `fd ${entry.fd}`).toEqual(['-netdev', 'tap']);
        }
      }
    });
  });

  // Last, so that an UPDATE_GOLDEN run has written the files of new entries by then.
  it('covers at least 12 x86_64 and 6 aarch64 configs, each with its golden file and no file left over', () => {
    expect(X86_64_MATRIX.length).toBeGreaterThanOrEqual(12);
    expect(ARM64_MATRIX.length).toBeGreaterThanOrEqual(6);
    // Each matrix holds its own architecture's configs only: the integration test runs each by the QEMU of that architecture.
    for (const [arch, entries] of Object.entries(MATRICES)) {
      expect(entries.filter((entry) => parseSandboxConfig(entry.config(GOLDEN_ENV)).machine.arch !== arch).map((entry) => entry.name), arch).toEqual([]);
    }
    const files = readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.txt')).sort();
    expect(files).toEqual(MATRIX.map((e) => `${e.name}.txt`).sort());
  });
});
