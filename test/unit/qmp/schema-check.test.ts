// The schema checker on a small synthetic query-qmp-schema: each kind of finding, exactly.
import { describe, expect, it } from 'vitest';
import { checkArguments, checkSurface, formatFindings, QmpSchema } from '../../../src/qmp/schema-check.ts';

const builtin = (name: string, jsonType: string) => ({ name, 'meta-type': 'builtin', 'json-type': jsonType });

const SCHEMA = new QmpSchema([
  builtin('str', 'string'),
  builtin('int', 'int'),
  builtin('bool', 'boolean'),
  builtin('any', 'value'),
  { name: '0', 'meta-type': 'object', members: [] },
  { name: 'query-status', 'meta-type': 'command', 'arg-type': '0', 'ret-type': 'S' },
  { name: 'S', 'meta-type': 'object', members: [{ name: 'running', type: 'bool' }, { name: 'status', type: 'RS' }] },
  { name: 'RS', 'meta-type': 'enum', values: ['running', 'paused'], members: [{ name: 'running' }, { name: 'paused', features: ['deprecated'] }] },
  { name: 'old-cmd', 'meta-type': 'command', 'arg-type': 'A', 'ret-type': '0', features: ['deprecated'] },
  { name: 'A', 'meta-type': 'object', members: [{ name: 'id', type: 'int' }] },
  { name: 'yank', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0', 'allow-oob': true },
  { name: 'query-list', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '[L]' },
  { name: '[L]', 'meta-type': 'array', 'element-type': 'L' },
  { name: 'L', 'meta-type': 'object', members: [{ name: 'type', type: 'LT' }], tag: 'type', variants: [{ case: 'dimm', type: 'LD' }] },
  { name: 'LT', 'meta-type': 'enum', values: ['dimm'] },
  { name: 'LD', 'meta-type': 'object', members: [{ name: 'size', type: 'int' }] },
  { name: 'SHUTDOWN', 'meta-type': 'event', 'arg-type': 'D' },
  { name: 'D', 'meta-type': 'object', members: [{ name: 'guest', type: 'bool' }, { name: 'reason', type: 'str', features: ['deprecated'] }] },
  { name: 'blockdev-add', 'meta-type': 'command', 'arg-type': 'BO', 'ret-type': '0' },
  {
    name: 'BO',
    'meta-type': 'object',
    members: [{ name: 'driver', type: 'BD' }, { name: 'node-name', type: 'str' }, { name: 'file', type: 'REF' }],
    tag: 'driver',
    variants: [{ case: 'file', type: 'BF' }, { case: 'raw', type: '0' }],
  },
  { name: 'BD', 'meta-type': 'enum', values: ['file', 'raw', 'vvfat'] },
  { name: 'BF', 'meta-type': 'object', members: [{ name: 'filename', type: 'str' }, { name: 'aio', type: 'AIO' }] },
  { name: 'AIO', 'meta-type': 'enum', values: ['threads', 'native'] },
  { name: 'REF', 'meta-type': 'alternate', members: [{ type: 'BO' }, { type: 'str' }] },
  // A simple union (chardev-add's backend): every variant wraps its members in `data`.
  { name: 'chardev-add', 'meta-type': 'command', 'arg-type': 'CA', 'ret-type': '0' },
  { name: 'CA', 'meta-type': 'object', members: [{ name: 'id', type: 'str' }, { name: 'backend', type: 'CB' }] },
  { name: 'CB', 'meta-type': 'object', members: [{ name: 'type', type: 'CBT' }], tag: 'type', variants: [{ case: 'file', type: 'CFW' }, { case: 'socket', type: 'CSW' }] },
  { name: 'CBT', 'meta-type': 'enum', values: ['file', 'socket'] },
  { name: 'CFW', 'meta-type': 'object', members: [{ name: 'data', type: 'CF' }] },
  { name: 'CF', 'meta-type': 'object', members: [{ name: 'out', type: 'str' }] },
  { name: 'CSW', 'meta-type': 'object', members: [{ name: 'data', type: 'CS' }] },
  { name: 'CS', 'meta-type': 'object', members: [{ name: 'addr', type: 'str' }, { name: 'server', type: 'bool' }] },
]);

describe('checkSurface', () => {
  it('reports a missing command, member and event, a wrong type, deprecated commands, members and enum values, and a missing variant', () => {
    const findings = checkSurface(
      SCHEMA,
      {
        'query-status': { args: null, ret: { object: { running: 'bool', singlestep: 'bool', status: { enum: ['running', 'paused'] } } } },
        'old-cmd': { args: { id: 'str' }, ret: { object: {} } },
        'query-list': { args: null, ret: { array: { object: { type: 'str' }, cases: { dimm: { size: 'int' }, 'virtio-mem': { size: 'int' } } } } },
        gone: { args: null, ret: 'any' },
      },
      { SHUTDOWN: { guest: 'bool', reason: 'str' }, GUEST_PANICKED: {} },
      ['query-status'],
    );
    expect(findings).toEqual([
      { where: 'command query-status', problem: 'is not allowed out-of-band (allow-oob), which the library sends it as' },
      { where: 'command query-status: result.singlestep', problem: 'is missing' },
      { where: 'command query-status: result.status', problem: "value 'paused' is deprecated" },
      { where: 'command old-cmd', problem: 'is deprecated' },
      { where: 'command old-cmd: argument id', problem: 'is int in the schema, the library expects str' },
      { where: 'command query-list: result[]', problem: 'has no variant type=virtio-mem' },
      { where: 'command gone', problem: 'is missing' },
      { where: 'event SHUTDOWN: data.reason', problem: 'is deprecated' },
      { where: 'event GUEST_PANICKED', problem: 'is missing' },
    ]);
  });

  it('finds nothing where the schema has everything, of the kinds expected', () => {
    const findings = checkSurface(
      SCHEMA,
      { 'query-list': { args: null, ret: { array: { object: { type: { enum: ['dimm'] } }, cases: { dimm: { size: 'int' } } } } }, yank: { args: {}, ret: { object: {} } } },
      { SHUTDOWN: { guest: 'bool' } },
      ['yank'],
    );
    expect(findings).toEqual([]);
  });
});

describe('a union whose tag the library sends with one value', () => {
  const use = (data: Record<string, 'str' | 'bool'>) =>
    checkSurface(SCHEMA, { 'chardev-add': { args: { id: 'str', backend: { object: { type: { enum: ['socket'] }, data: { object: data } } } }, ret: { object: {} } } }, {}, []);

  it('is checked against that variant\'s members alone', () => {
    expect(use({ addr: 'str', server: 'bool' })).toEqual([]);
  });

  it('reports a member that variant lacks, even where another variant has it', () => {
    expect(use({ addr: 'str', out: 'str' })).toEqual([{ where: 'command chardev-add: argument backend.data.out', problem: 'is missing' }]);
  });
});

describe('checkArguments', () => {
  it('checks sent values through flat unions (by their tag) and alternates, nested members included', () => {
    expect(checkArguments(SCHEMA, 'blockdev-add', { driver: 'file', 'node-name': 'n', filename: '/x', aio: 'fast', extra: 1 })).toEqual([
      { where: 'command blockdev-add: argument aio', problem: "has no value 'fast'" },
      { where: 'command blockdev-add: argument extra', problem: 'is missing' },
    ]);
    // The alternate's object branch explains an object value, not its str branch.
    expect(checkArguments(SCHEMA, 'blockdev-add', { driver: 'raw', 'node-name': 'n', file: { driver: 'file', filename: 5 } })).toEqual([
      { where: 'command blockdev-add: argument file.filename', problem: 'is str in the schema, the library sends 5' },
    ]);
    expect(checkArguments(SCHEMA, 'blockdev-add', { driver: 'vvfat', 'node-name': 'n' })).toEqual([{ where: 'command blockdev-add: argument', problem: 'has no variant driver=vvfat' }]);
    expect(checkArguments(SCHEMA, 'blockdev-add', { driver: 'raw', 'node-name': 'n', file: 'other-node' })).toEqual([]);
    expect(checkArguments(SCHEMA, 'nbd-server-add', {})).toEqual([{ where: 'command nbd-server-add', problem: 'is missing' }]);
  });

  it('lists each distinct finding once, one a line', () => {
    const twice = [0, 1].flatMap(() => checkArguments(SCHEMA, 'blockdev-add', { driver: 'file', 'node-name': 'n', extra: 1 }));
    expect(formatFindings(twice)).toBe('command blockdev-add: argument extra is missing');
  });
});
