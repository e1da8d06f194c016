// The QMP surface the library uses (src/qmp/surface.ts) and the free-form arguments its builders
// produce, held against the query-qmp-schema replies of the QEMUs the matrix proves, recorded in
// test/fixtures/qmp-schema/ (`qemu-system-x86_64 -S -machine q35` of Debian 12's 7.2 and of 10.0.2
// from its backports; `query-qmp-schema`'s return, gzipped). The live test against each installed
// QEMU is test/integration/qmp-schema.test.ts; this one runs without QEMU, so a misspelt command,
// argument, member or type in the surface fails the unit suite (and its mutation run) too. The
// recordings are test inputs, not a vendored schema: the typed command map stays hand-written.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { checkArguments, checkSurface, formatFindings, QmpSchema } from '../../../src/qmp/schema-check.ts';
import { RUN_STATES } from '../../../src/qmp/run-states.ts';
import { QMP_EVENTS, QMP_OOB_COMMANDS, QMP_SURFACE, type QmpSurface } from '../../../src/qmp/surface.ts';
import { blockdevVariants, memoryBackendVariants, netdevVariants } from '../../helpers/schema-variants.ts';

const RECORDED = ['7.2', '10.0'] as const;

type SchemaEntry = { 'meta-type': string; values?: string[]; members?: { name: string }[] };

function recordedEntries(version: (typeof RECORDED)[number]): SchemaEntry[] {
  const path = new URL(`../../fixtures/qmp-schema/qemu-${version}.json.gz`, import.meta.url);
  return JSON.parse(gunzipSync(readFileSync(path)).toString('utf8')) as SchemaEntry[];
}

function recorded(version: (typeof RECORDED)[number]): QmpSchema {
  return new QmpSchema(recordedEntries(version));
}

/** The schema with `value` gone from every enum, as a QEMU that dropped it would describe itself. */
function withoutEnumValue(entries: SchemaEntry[], value: string): QmpSchema {
  return new QmpSchema(
    entries.map((entry) =>
      entry['meta-type'] === 'enum' ? { ...entry, values: entry.values?.filter((v) => v !== value), members: entry.members?.filter((m) => m.name !== value) } : entry,
    ),
  );
}

/** The schema with member `name` gone from every object type. */
function withoutMember(entries: SchemaEntry[], name: string): QmpSchema {
  return new QmpSchema(entries.map((entry) => (entry['meta-type'] === 'object' ? { ...entry, members: entry.members?.filter((m) => m.name !== name) } : entry)));
}

/**
 * Members the library reads where the compiler cannot hold the surface to them (a union's variants,
 * the backend's own events), and the finding their removal must give.
 */
const MEMBERS_READ: readonly [string, RegExp][] = [
  ['slot', /^command query-memory-devices: result\[\]\(type=dimm\)\.data\.slot is missing$/m],
  ['block-size', /^command query-memory-devices: result\[\]\(type=virtio-mem\)\.data\.block-size is missing$/m],
  ['path', /^event DEVICE_DELETED: data\.path is missing$/m],
  ['qom-path', /^event MEMORY_DEVICE_SIZE_CHANGE: data\.qom-path is missing$/m],
];

/**
 * Every enum value the library sends or tells apart in a reply, named here rather than read from the
 * surface, so that a value dropped from the surface is noticed: the capabilities and migration
 * capability it enables, the run states it checks, the memory devices it reads, the chardev and
 * socket address it adds, the yank instances it names.
 */
const ENUM_VALUES_USED = ['oob', ...RUN_STATES, 'dimm', 'nvdimm', 'x-ignore-shared', 'socket', 'unix', 'chardev', 'block-node', 'migration'];

describe.each(RECORDED)('the QMP surface against QEMU %s’s recorded schema', (version) => {
  const schema = recorded(version);

  it('backs every command, argument, result member and event the library uses, none deprecated', () => {
    expect(formatFindings(checkSurface(schema, QMP_SURFACE, QMP_EVENTS, QMP_OOB_COMMANDS))).toBe('');
  });

  it('takes blockdev-add, netdev_add and object-add as the library builds them for every variant', () => {
    const findings = [
      ...blockdevVariants().flatMap((args) => checkArguments(schema, 'blockdev-add', args)),
      ...netdevVariants().flatMap((args) => checkArguments(schema, 'netdev_add', args)),
      ...memoryBackendVariants().flatMap((args) => checkArguments(schema, 'object-add', args)),
    ];
    expect(formatFindings(findings)).toBe('');
  });

  it.each(ENUM_VALUES_USED)("would catch the enum value '%s' gone from this QEMU", (value) => {
    const findings = formatFindings(checkSurface(withoutEnumValue(recordedEntries(version), value), QMP_SURFACE, QMP_EVENTS, QMP_OOB_COMMANDS));
    expect(findings).toContain(`has no value '${value}'`);
  });

  it.each(MEMBERS_READ)("would catch the member '%s' gone from this QEMU", (name, finding) => {
    expect(formatFindings(checkSurface(withoutMember(recordedEntries(version), name), QMP_SURFACE, QMP_EVENTS, QMP_OOB_COMMANDS))).toMatch(finding);
  });

  it('would catch a misspelt command, argument or result member (the check is not vacuous)', () => {
    const misspelt = { ...QMP_SURFACE, 'query-statuss': QMP_SURFACE['query-status'] } as unknown as QmpSurface;
    expect(formatFindings(checkSurface(schema, misspelt, QMP_EVENTS, QMP_OOB_COMMANDS))).toMatch(/query-statuss/);
    const badArg = { ...QMP_SURFACE, device_del: { args: { identifier: 'str' }, ret: QMP_SURFACE.device_del.ret } } as unknown as QmpSurface;
    expect(formatFindings(checkSurface(schema, badArg, QMP_EVENTS, QMP_OOB_COMMANDS))).toMatch(/identifier/);
    expect(formatFindings(checkArguments(schema, 'netdev_add', { type: 'tap', id: 'n0', ifnam: 'tap0' }))).toMatch(/ifnam/);
  });
});
