// The QMP surface the library uses, held against the installed QEMU's own schema (query-qmp-schema):
// every command of the typed command map with the arguments it sends and the result members it
// reads, every event it listens for with the data it reads (src/qmp/surface.ts, compile-checked
// against QmpCommandMap), and the free-form arguments of blockdev-add, netdev_add and object-add as
// the library's own builders produce them for every config variant. None may be missing, typed
// otherwise, or deprecated: this is what catches the next QEMU that removes something.
import { mkdtempSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSandboxConfig } from '../../src/hypervisor/config/index.ts';
import { buildQemuArgv } from '../../src/qemu/argv/index.ts';
import { offersMigrationToFile } from '../../src/qemu/features/qemu-features.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import { atLeast, versionOfReply } from '../../src/qemu/template/qemu-version.ts';
import { checkArguments, checkSurface, formatFindings, QmpSchema, type SchemaFinding } from '../../src/qmp/schema-check.ts';
import { QMP_EVENTS, QMP_OOB_COMMANDS, QMP_SURFACE } from '../../src/qmp/surface.ts';
import { guestAssets } from '../guest/index.ts';
import { AIOS, blockdevVariants, CACHES, FORMATS, memoryBackendVariants, netdevVariants } from '../helpers/schema-variants.ts';
import { launchPaused, type PausedQemu } from '../helpers/paused-qemu.ts';

let qemu: PausedQemu;
let runtimeDir: string;
let schema: QmpSchema;
let schemaReply: unknown;
let version: string;

beforeAll(async () => {
  runtimeDir = mkdtempSync('/tmp/svmm-schema');
  const guest = guestAssets();
  const config = parseSandboxConfig({ id: 'vm-schema', machine: { accel: 'tcg' }, boot: { kernel: guest.kernel, initrd: guest.initrd } });
  const paths = runtimePaths(runtimeDir);
  const argv = buildQemuArgv(config, paths);
  qemu = await launchPaused({ args: argv.args, fds: argv.fds, qmpSocket: paths.qmpSocket, user: undefined });
  schemaReply = await qemu.qmp.executeUntyped('query-qmp-schema');
  schema = new QmpSchema(schemaReply);
  version = versionOfReply(await qemu.qmp.executeUntyped('query-version')) ?? '';
});

afterAll(async () => {
  await qemu?.stop();
  if (runtimeDir) rmSync(runtimeDir, { recursive: true, force: true });
});

/** Passes when nothing was found; otherwise fails listing every finding, one a line. */
function expectNoFindings(findings: readonly SchemaFinding[]) {
  const report = formatFindings(findings);
  expect(report, `${report.split('\n').length} use(s) of QMP that this QEMU's schema does not back`).toBe('');
}

describe('the QMP surface against this QEMU’s query-qmp-schema', () => {
  it('has every command with the arguments sent and the result members read (yank allowed out-of-band), and every event with the data read, none deprecated', () => {
    expectNoFindings(checkSurface(schema, QMP_SURFACE, QMP_EVENTS, QMP_OOB_COMMANDS));
  });

  it('takes blockdev-add’s arguments (BlockdevOptions by driver) as the library builds them for every disk variant', () => {
    const variants = blockdevVariants();
    // Every format × cache × aio × read-only × protocol × source the config admits (native aio only with O_DIRECT).
    expect(variants).toHaveLength(FORMATS.length * 2 * 2 * 2 * (CACHES.length * AIOS.length - (CACHES.length - 2)));
    expectNoFindings(variants.flatMap((args) => checkArguments(schema, 'blockdev-add', args)));
  });

  it('takes netdev_add’s arguments (Netdev by type) as the library builds them for every tap variant', () => {
    expectNoFindings(netdevVariants().flatMap((args) => checkArguments(schema, 'netdev_add', args)));
  });

  it('offers a template’s state the file: URI exactly where QEMU has the file migration address (8.2): fd: to a file is deprecated since 9.1', () => {
    // The probe reads the schema, not the version; the version only says what this QEMU must answer.
    expect(version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(offersMigrationToFile(schemaReply)).toBe(atLeast(version, 8, 2));
  });

  it('takes object-add’s arguments (ObjectOptions by qom-type) for every memory backing, with and without prealloc', () => {
    const variants = memoryBackendVariants();
    expect(new Set(variants.map((args) => args['qom-type']))).toEqual(new Set(['memory-backend-ram', 'memory-backend-memfd', 'memory-backend-file']));
    expectNoFindings(variants.flatMap((args) => checkArguments(schema, 'object-add', args)));
  });
});
