// The schema checker, finding by finding, on small hand-made schemas: each kind of value the
// library describes (str, int, number, bool, enum, array, object, union, alternate) against each
// kind of type a schema can hold, with the exact finding, and the values the builders send.
// schema-check.test.ts covers the surface-wide walk; recorded-schemas.test.ts real QEMUs' schemas.
import { describe, expect, it } from 'vitest';
import { checkArguments, checkSurface, formatFindings, QmpSchema, type SchemaFinding, type SurfaceTable } from '../../../src/qmp/schema-check.ts';
import type { WireMembers, WireShape } from '../../../src/qmp/surface.ts';

const builtin = (name: string, jsonType: string) => ({ name, 'meta-type': 'builtin', 'json-type': jsonType });

/** Builtins, a few types of each meta-type, and one command `use` whose result type is named per test. */
const TYPES = [
  builtin('str', 'string'),
  builtin('int', 'int'),
  builtin('number', 'number'),
  builtin('bool', 'boolean'),
  builtin('any', 'value'),
  builtin('null', 'null'),
  { name: '0', 'meta-type': 'object', members: [] },
  { name: 'E', 'meta-type': 'enum', values: ['a', 'b'], members: [{ name: 'a' }, { name: 'b', features: ['deprecated'] }] },
  // An enum as older QEMUs describe it: values, no members.
  { name: 'E-old', 'meta-type': 'enum', values: ['a'] },
  { name: 'E-none', 'meta-type': 'enum' },
  { name: '[int]', 'meta-type': 'array', 'element-type': 'int' },
  { name: '[O]', 'meta-type': 'array', 'element-type': 'O' },
  { name: 'O', 'meta-type': 'object', members: [{ name: 'id', type: 'str' }, { name: 'size', type: 'int' }, { name: 'old', type: 'int', features: ['deprecated'] }] },
  { name: 'O-bare', 'meta-type': 'object' },
  { name: 'OLD', 'meta-type': 'object', members: [], features: ['deprecated'] },
  { name: 'ALT-int-bool', 'meta-type': 'alternate', members: [{ type: 'int' }, { type: 'bool' }] },
  { name: 'ALT-str-O', 'meta-type': 'alternate', members: [{ type: 'str' }, { type: 'O' }] },
  { name: 'ALT-int-O', 'meta-type': 'alternate', members: [{ type: 'int' }, { type: 'O' }] },
  { name: 'ALT-none', 'meta-type': 'alternate' },
  // A flat union with an enum tag: variant members on top of the base's.
  { name: 'U', 'meta-type': 'object', members: [{ name: 'kind', type: 'UK' }, { name: 'id', type: 'str' }], tag: 'kind', variants: [{ case: 'disk', type: 'UD' }, { case: 'nic', type: 'UN' }, { case: 'gone', type: 'NO-SUCH' }] },
  { name: 'UK', 'meta-type': 'enum', values: ['disk', 'nic', 'gone', 'bare'] },
  { name: 'UD', 'meta-type': 'object', members: [{ name: 'path', type: 'str' }, { name: 'shared', type: 'int' }] },
  { name: 'UN', 'meta-type': 'object', members: [{ name: 'mac', type: 'str' }, { name: 'shared', type: 'bool', features: ['deprecated'] }] },
  // A union whose tag is a plain string: a value without a variant of its own is still valid.
  { name: 'UO', 'meta-type': 'object', members: [{ name: 'type', type: 'str' }], tag: 'type', variants: [{ case: 'tap', type: 'UD' }] },
  // A union that names a tag but lists no variants.
  { name: 'UV', 'meta-type': 'object', members: [{ name: 'type', type: 'UK' }], tag: 'type' },
  // Alternates whose branches share a kind: the one that fits, not the first of the kind, decides.
  { name: 'O2', 'meta-type': 'object', members: [{ name: 'nope', type: 'int' }] },
  { name: 'ALT-O-O2', 'meta-type': 'alternate', members: [{ type: 'O' }, { type: 'O2' }] },
  { name: 'old-int', 'meta-type': 'builtin', 'json-type': 'int', features: ['deprecated'] },
  { name: 'ALT-oldint-O', 'meta-type': 'alternate', members: [{ type: 'old-int' }, { type: 'O' }] },
  { name: 'ALT-int-E', 'meta-type': 'alternate', members: [{ type: 'int' }, { type: 'E' }] },
  // A string tag beside other members of the base.
  { name: 'UO2', 'meta-type': 'object', members: [{ name: 'type', type: 'str' }, { name: 'id', type: 'str' }], tag: 'type', variants: [{ case: 'tap', type: 'UD' }] },
  // A union that lists no members of its own, and one whose tag's type the schema lacks.
  { name: 'UX', 'meta-type': 'object', tag: 'type', variants: [{ case: 'a', type: 'UD' }] },
  { name: 'UT', 'meta-type': 'object', members: [{ name: 'type', type: 'NO-SUCH' }], tag: 'type', variants: [{ case: 'a', type: 'UD' }] },
  // A base member that a variant also has, of another type: the base's is the one.
  { name: 'UB', 'meta-type': 'object', members: [{ name: 'kind', type: 'UK' }, { name: 'id', type: 'str' }], tag: 'kind', variants: [{ case: 'disk', type: 'UBD' }] },
  { name: 'UBD', 'meta-type': 'object', members: [{ name: 'id', type: 'int' }] },
  // Not a type at all: what a newer QEMU could add to its meta-types.
  { name: 'X', 'meta-type': 'struct' },
  // PciDeviceInfo-like: an object that holds a list of itself.
  { name: 'R', 'meta-type': 'object', members: [{ name: 'id', type: 'str' }, { name: 'children', type: '[R]' }] },
  { name: '[R]', 'meta-type': 'array', 'element-type': 'R' },
  { name: 'R2', 'meta-type': 'object', members: [{ name: 'name', type: 'str' }, { name: 'children', type: '[R]' }] },
];

function schemaWith(...extra: object[]): QmpSchema {
  return new QmpSchema([...TYPES, ...extra]);
}

/** The findings for the result shape `ret` of a command whose result type is `retType`. */
function resultFindings(ret: WireShape, retType: string): SchemaFinding[] {
  const schema = schemaWith({ name: 'use', 'meta-type': 'command', 'arg-type': '0', 'ret-type': retType });
  return checkSurface(schema, { use: { args: null, ret } }, {}, []);
}

/** The findings for arguments `args` (as described) of a command whose argument type is `argType`. */
function argumentFindings(args: WireMembers, argType: string): SchemaFinding[] {
  const schema = schemaWith({ name: 'use', 'meta-type': 'command', 'arg-type': argType, 'ret-type': '0' });
  return checkSurface(schema, { use: { args, ret: { object: {} } } }, {}, []);
}

/** The findings for a value sent as arguments of a command whose argument type is `argType`. */
function valueFindings(args: Record<string, unknown>, argType: string): SchemaFinding[] {
  return checkArguments(schemaWith({ name: 'use', 'meta-type': 'command', 'arg-type': argType, 'ret-type': '0' }), 'use', args);
}

const at = (where: string, problem: string): SchemaFinding => ({ where, problem });

describe('QmpSchema', () => {
  it('refuses a reply that is not a list of named entries, saying what it got', () => {
    expect(() => new QmpSchema({ name: 'x' })).toThrow(new TypeError('query-qmp-schema did not return an array'));
    expect(() => new QmpSchema([builtin('str', 'string'), null])).toThrow(new TypeError('query-qmp-schema entry null has no name'));
    expect(() => new QmpSchema([{ 'meta-type': 'enum' }])).toThrow(new TypeError('query-qmp-schema entry {"meta-type":"enum"} has no name'));
    expect(() => new QmpSchema([{ name: 7 }])).toThrow(new TypeError('query-qmp-schema entry {"name":7} has no name'));
    expect(() => new QmpSchema(['str'])).toThrow(TypeError);
  });

  it('keeps commands, events and types apart, even under one name', () => {
    const schema = new QmpSchema([
      { name: 'same', 'meta-type': 'command', 'arg-type': '0' },
      { name: 'same', 'meta-type': 'event', 'arg-type': '0' },
      { name: 'same', 'meta-type': 'object', members: [] },
    ]);
    expect(schema.command('same')?.['meta-type']).toBe('command');
    expect(schema.event('same')?.['meta-type']).toBe('event');
    expect(schema.type('same')?.['meta-type']).toBe('object');
    expect(schema.command('other')).toBeUndefined();
    expect(schema.event('other')).toBeUndefined();
    expect(schema.type('other')).toBeUndefined();
  });
});

describe('a described value against a type of another kind', () => {
  it.each<[WireShape, string, string]>([
    ['str', 'int', 'is int in the schema, the library expects str'],
    ['int', 'str', 'is str in the schema, the library expects int'],
    ['int', 'number', 'is number in the schema, the library expects int'],
    ['bool', 'int', 'is int in the schema, the library expects bool'],
    ['number', 'str', 'is str in the schema, the library expects number'],
    ['int', 'E', 'is an enum in the schema, the library expects int'],
    ['str', 'O', 'is an object in the schema, the library expects str'],
    ['str', '[int]', 'is an array in the schema, the library expects str'],
    [{ enum: ['a'] }, 'int', 'is int in the schema, the library expects an enum'],
    [{ enum: ['a'] }, 'O', 'is an object in the schema, the library expects an enum'],
    [{ array: 'int' }, 'O', 'is an object in the schema, the library expects an array'],
    [{ array: 'int' }, 'str', 'is str in the schema, the library expects an array'],
    [{ object: {} }, '[O]', 'is an array in the schema, the library expects an object'],
    [{ object: {} }, 'E', 'is an enum in the schema, the library expects an object'],
  ])('%j against %s', (shape, type, problem) => {
    expect(resultFindings(shape, type)).toEqual([at('command use: result', problem)]);
  });

  it('takes what fits: numbers from int and number, strings from enums, enums from strings, anything as any', () => {
    const fits: [WireShape, string][] = [
      ['str', 'str'],
      ['str', 'E'],
      ['int', 'int'],
      ['number', 'number'],
      ['number', 'int'],
      ['bool', 'bool'],
      ['any', 'O'],
      [{ enum: ['a', 'x'] }, 'str'],
      [{ array: 'int' }, '[int]'],
      [{ object: { id: 'str' } }, 'O'],
    ];
    for (const [shape, type] of fits) expect(resultFindings(shape, type), `${JSON.stringify(shape)} against ${type}`).toEqual([]);
  });

  it("names the type a reference points to when the schema lacks it, and a deprecated type, even for 'any'", () => {
    expect(resultFindings('any', 'NO-SUCH')).toEqual([at('command use: result', 'refers to type NO-SUCH, which the schema does not define')]);
    expect(resultFindings({ object: {} }, 'OLD')).toEqual([at('command use: result', 'is deprecated (its type carries the deprecated feature)')]);
    expect(resultFindings('any', 'OLD')).toEqual([at('command use: result', 'is deprecated (its type carries the deprecated feature)')]);
  });

  it('says so when a command has no argument type at all', () => {
    const schema = new QmpSchema([...TYPES, { name: 'use', 'meta-type': 'command', 'ret-type': '0' }]);
    expect(checkSurface(schema, { use: { args: { id: 'str' }, ret: { object: {} } } }, {}, [])).toEqual([
      at('command use: arguments', 'refers to type undefined, which the schema does not define'),
    ]);
    // A command the library sends without arguments is not looked into.
    expect(checkSurface(schema, { use: { args: null, ret: { object: {} } } }, {}, [])).toEqual([]);
  });
});

describe('enums', () => {
  it('reports each value the library uses that the enum lacks or deprecates, and none it has', () => {
    expect(resultFindings({ enum: ['a', 'b', 'c'] }, 'E')).toEqual([
      at('command use: result', "value 'b' is deprecated"),
      at('command use: result', "has no value 'c'"),
    ]);
    expect(resultFindings({ enum: ['a'] }, 'E-old')).toEqual([]);
    expect(resultFindings({ enum: ['a'] }, 'E-none')).toEqual([at('command use: result', "has no value 'a'")]);
  });
});

describe('arrays', () => {
  it('checks the elements, at <where>[]', () => {
    expect(resultFindings({ array: { object: { id: 'int', name: 'str' } } }, '[O]')).toEqual([
      at('command use: result[].id', 'is str in the schema, the library expects int'),
      at('command use: result[].name', 'is missing'),
    ]);
  });
});

describe('objects', () => {
  it('reports missing and deprecated members, and checks each member it finds', () => {
    expect(resultFindings({ object: { id: 'str', size: 'str', old: 'int', extra: 'bool' } }, 'O')).toEqual([
      at('command use: result.size', 'is int in the schema, the library expects str'),
      at('command use: result.old', 'is deprecated'),
      at('command use: result.extra', 'is missing'),
    ]);
    expect(resultFindings({ object: { id: 'str' } }, 'O-bare')).toEqual([at('command use: result.id', 'is missing')]);
  });

  it('names argument members without a dot and event data members after "data."', () => {
    expect(argumentFindings({ id: 'int' }, 'O')).toEqual([at('command use: argument id', 'is str in the schema, the library expects int')]);
    const schema = schemaWith({ name: 'EV', 'meta-type': 'event', 'arg-type': 'O' }, { name: 'OLD-EV', 'meta-type': 'event', 'arg-type': '0', features: ['deprecated'] }, { name: 'NOARG-EV', 'meta-type': 'event' });
    expect(checkSurface(schema, {}, { EV: { size: 'str', nope: 'int' }, 'OLD-EV': {}, 'NOARG-EV': { id: 'str' }, 'NO-EV': {} }, [])).toEqual([
      at('event EV: data.size', 'is int in the schema, the library expects str'),
      at('event EV: data.nope', 'is missing'),
      at('event OLD-EV', 'is deprecated'),
      at('event NOARG-EV: data', 'refers to type undefined, which the schema does not define'),
      at('event NO-EV', 'is missing'),
    ]);
  });

  it('follows a type that holds a list of itself, and checks one shape against each type it meets', () => {
    const node: { object: Record<string, WireShape> } = { object: { id: 'str' } };
    node.object['children'] = { array: node };
    // R holds [R]: the walk ends where the same shape meets the same type again.
    expect(resultFindings(node, 'R')).toEqual([]);
    // R2's children are R: the one shape is checked against R2, then against R (which has id, not name).
    const named: { object: Record<string, WireShape> } = { object: { name: 'str' } };
    named.object['children'] = { array: named };
    expect(resultFindings(named, 'R2')).toEqual([at('command use: result.children[].name', 'is missing')]);
  });

  it('checks a shape shared by two commands against each command’s own type', () => {
    const shared: WireShape = { object: { id: 'str' } };
    const schema = schemaWith(
      { name: 'first', 'meta-type': 'command', 'arg-type': '0', 'ret-type': 'O' },
      { name: 'second', 'meta-type': 'command', 'arg-type': '0', 'ret-type': 'UD' },
    );
    const surface: SurfaceTable = { first: { args: null, ret: shared }, second: { args: null, ret: shared } };
    expect(checkSurface(schema, surface, {}, [])).toEqual([at('command second: result.id', 'is missing')]);
  });
});

describe('unions', () => {
  it('looks a member up in the variants when the base lacks it, and checks it in every variant that has it', () => {
    expect(resultFindings({ object: { kind: 'str', path: 'str', mac: 'str' } }, 'U')).toEqual([]);
    expect(resultFindings({ object: { kind: 'str', shared: 'int' } }, 'U')).toEqual([
      at('command use: result.shared', 'is deprecated'),
      at('command use: result.shared', 'is bool in the schema, the library expects int'),
    ]);
    expect(resultFindings({ object: { kind: 'str', serial: 'str' } }, 'U')).toEqual([at('command use: result.serial', 'is missing')]);
  });

  it('takes a member from the base when a variant has one of the same name too', () => {
    expect(resultFindings({ object: { kind: 'str', id: 'str' } }, 'UB')).toEqual([]);
  });

  it('with the tag fixed to one value, looks in that variant alone; with two values, in all', () => {
    expect(resultFindings({ object: { kind: { enum: ['disk'] }, path: 'str' } }, 'U')).toEqual([]);
    expect(resultFindings({ object: { kind: { enum: ['disk'] }, mac: 'str' } }, 'U')).toEqual([at('command use: result.mac', 'is missing')]);
    expect(resultFindings({ object: { kind: { enum: ['disk', 'nic'] }, mac: 'str' } }, 'U')).toEqual([]);
    // A tag described as a plain string fixes nothing.
    expect(resultFindings({ object: { kind: 'str', mac: 'str' } }, 'U')).toEqual([]);
  });

  it('checks the members of each case the library tells apart, and names a case the union lacks', () => {
    expect(resultFindings({ object: { kind: 'str' }, cases: { disk: { path: 'int' }, nic: { mac: 'str' }, cdrom: { path: 'str' }, gone: {} } }, 'U')).toEqual([
      at('command use: result(kind=disk).path', 'is str in the schema, the library expects int'),
      at('command use: result', 'has no variant kind=cdrom'),
      at('command use: result', 'has no variant kind=gone'),
    ]);
    expect(resultFindings({ object: {}, cases: { disk: {} } }, 'O')).toEqual([at('command use: result', 'has no variant tag=disk')]);
  });
});

describe('alternates', () => {
  it('take a shape one of their branches fits', () => {
    expect(resultFindings('str', 'ALT-str-O')).toEqual([]);
    expect(resultFindings({ object: { id: 'str' } }, 'ALT-str-O')).toEqual([]);
    expect(resultFindings('bool', 'ALT-int-bool')).toEqual([]);
  });

  it('explain a misfit by the branch of the same kind', () => {
    expect(resultFindings({ object: { id: 'str', nope: 'int' } }, 'ALT-int-O')).toEqual([at('command use: result.nope', 'is missing')]);
    expect(resultFindings({ object: { size: 'str' } }, 'ALT-str-O')).toEqual([at('command use: result.size', 'is int in the schema, the library expects str')]);
  });

  it.each<[WireShape, string]>([
    ['str', 'str'],
    [{ enum: ['a'] }, 'an enum'],
    [{ array: 'int' }, 'an array'],
    [{ object: {} }, 'an object'],
  ])('say when no branch is of the kind of %j', (shape, kind) => {
    expect(resultFindings(shape, 'ALT-int-bool')).toEqual([at('command use: result', `is an alternate, and none of its branches is ${kind}`)]);
  });

  it('take a shape the second branch of a kind fits, though the first of that kind does not', () => {
    expect(resultFindings({ object: { nope: 'int' } }, 'ALT-O-O2')).toEqual([]);
  });

  it('explain by a branch of the right kind, not by a deprecated one of another kind', () => {
    expect(resultFindings({ object: { nope: 'str' } }, 'ALT-oldint-O')).toEqual([at('command use: result.nope', 'is missing')]);
  });

  it('explain an enum value missing from their enum branch by that branch', () => {
    expect(resultFindings({ enum: ['c'] }, 'ALT-int-E')).toEqual([at('command use: result', "has no value 'c'")]);
  });

  it('without branches fit nothing', () => {
    expect(resultFindings('str', 'ALT-none')).toEqual([at('command use: result', 'is an alternate, and none of its branches is str')]);
  });
});

describe('out-of-band commands', () => {
  it('must allow exec-oob; a command the schema lacks is reported once, as missing', () => {
    const schema = schemaWith(
      { name: 'yank', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0', 'allow-oob': true },
      { name: 'slow', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0', 'allow-oob': false },
      { name: 'plain', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0' },
    );
    const none = { args: null, ret: { object: {} } } as const;
    expect(checkSurface(schema, { yank: none, slow: none, plain: none, absent: none }, {}, ['yank', 'slow', 'plain', 'absent'])).toEqual([
      at('command slow', 'is not allowed out-of-band (allow-oob), which the library sends it as'),
      at('command plain', 'is not allowed out-of-band (allow-oob), which the library sends it as'),
      at('command absent', 'is missing'),
    ]);
  });
});

describe('checkArguments: the values a builder sends', () => {
  it.each<[unknown, string]>([
    ['x', 'str'],
    [true, 'bool'],
    [3, 'int'],
    [9007199254740993n, 'int'],
    [1.5, 'number'],
    [2, 'number'],
    [null, 'null'],
    [{ deep: [1] }, 'any'],
    ['a', 'E'],
    [[1, 2], '[int]'],
    [7, 'ALT-int-bool'],
    ['node', 'ALT-str-O'],
  ])('takes %s as %s', (value, type) => {
    const schema = schemaWith({ name: 'use', 'meta-type': 'command', 'arg-type': 'W', 'ret-type': '0' }, { name: 'W', 'meta-type': 'object', members: [{ name: 'v', type }] });
    expect(checkArguments(schema, 'use', { v: value })).toEqual([]);
  });

  it.each<[unknown, string, string]>([
    [1, 'str', 'is str in the schema, the library sends 1'],
    [true, 'str', 'is str in the schema, the library sends true'],
    [null, 'str', 'is str in the schema, the library sends null'],
    ['1', 'int', 'is int in the schema, the library sends "1"'],
    [1.5, 'int', 'is int in the schema, the library sends 1.5'],
    ['1.5', 'number', 'is number in the schema, the library sends "1.5"'],
    [1, 'bool', 'is bool in the schema, the library sends 1'],
    [0, 'null', 'is null in the schema, the library sends 0'],
    [1, 'E', 'is an enum in the schema, the library sends 1'],
    ['c', 'E', "has no value 'c'"],
    ['b', 'E', "value 'b' is deprecated"],
    [{ 0: 1 }, '[int]', 'is an array in the schema, the library sends {"0":1}'],
    [null, 'O', 'is an object in the schema, the library sends null'],
    [[], 'O', 'is an object in the schema, the library sends []'],
    ['id', 'O', 'is an object in the schema, the library sends "id"'],
    ['x', 'ALT-int-bool', 'is an alternate with no branch for "x"'],
    ['x', 'ALT-none', 'is an alternate with no branch for "x"'],
    [1, 'X', 'refers to struct X, not a type'],
    [1, 'NO-SUCH', 'refers to type NO-SUCH, which the schema does not define'],
  ])('refuses %j as %s', (value, type, problem) => {
    const findings = checkArguments(schemaWith({ name: 'use', 'meta-type': 'command', 'arg-type': type, 'ret-type': '0' }), 'use', value as Record<string, unknown>);
    expect(findings).toEqual([at('command use: argument', problem)]);
  });

  it('names an array element by its index and an object member by its name', () => {
    expect(valueFindings({ id: 'x', size: 1, old: 2, extra: 3 }, 'O')).toEqual([
      at('command use: argument old', 'is deprecated'),
      at('command use: argument extra', 'is missing'),
    ]);
    const schema = schemaWith({ name: 'list', 'meta-type': 'command', 'arg-type': 'L', 'ret-type': '0' }, { name: 'L', 'meta-type': 'object', members: [{ name: 'items', type: '[O]' }] });
    expect(checkArguments(schema, 'list', { items: [{ id: 'a' }, { id: 2 }, { size: 'big' }] })).toEqual([
      at('command list: argument items[1].id', 'is str in the schema, the library sends 2'),
      at('command list: argument items[2].size', 'is int in the schema, the library sends "big"'),
    ]);
  });

  it('takes a value the second branch of a kind fits, and explains a misfit by a branch of the value’s kind', () => {
    expect(valueFindings({ nope: 1 }, 'ALT-O-O2')).toEqual([]);
    expect(valueFindings({ nope: 1 }, 'ALT-oldint-O')).toEqual([at('command use: argument nope', 'is missing')]);
    expect(checkArguments(schemaWith({ name: 'use', 'meta-type': 'command', 'arg-type': 'ALT-int-E', 'ret-type': '0' }), 'use', 'c' as unknown as Record<string, unknown>)).toEqual([
      at('command use: argument', "has no value 'c'"),
    ]);
  });

  it('explains an alternate misfit by the branch of the value’s kind', () => {
    expect(valueFindings({ id: 1 }, 'ALT-str-O')).toEqual([at('command use: argument id', 'is str in the schema, the library sends 1')]);
  });

  it('checks a union’s value against the variant its tag selects, and accepts any value of a string tag', () => {
    expect(valueFindings({ kind: 'disk', id: 'd', path: '/p', shared: 1 }, 'U')).toEqual([]);
    expect(valueFindings({ kind: 'nic', mac: 'm', path: '/p' }, 'U')).toEqual([at('command use: argument path', 'is missing')]);
    expect(valueFindings({ kind: 'nic', shared: true }, 'U')).toEqual([at('command use: argument shared', 'is deprecated')]);
    // An enum value without a variant: only the base's members.
    expect(valueFindings({ kind: 'bare', path: '/p' }, 'U')).toEqual([at('command use: argument', 'has no variant kind=bare')]);
    // A variant whose type the schema lacks.
    expect(valueFindings({ kind: 'gone' }, 'U')).toEqual([at('command use: argument', 'has no variant kind=gone')]);
    // A string tag: a value without a variant is fine, with the base's members only.
    expect(valueFindings({ type: 'user' }, 'UO')).toEqual([]);
    expect(valueFindings({ type: 'user', path: '/p' }, 'UO')).toEqual([at('command use: argument path', 'is missing')]);
    expect(valueFindings({ type: 'tap', path: '/p' }, 'UO')).toEqual([]);
    expect(valueFindings({ type: 'user', id: 'x' }, 'UO2')).toEqual([]);
    // No members of its own, or a tag of a type the schema lacks: a value without a variant is refused.
    expect(valueFindings({ type: 'zzz' }, 'UX')).toEqual([at('command use: argument', 'has no variant type=zzz')]);
    expect(valueFindings({ type: 'b' }, 'UT')).toEqual([at('command use: argument', 'has no variant type=b')]);
    // A tag without variants, and a union value that leaves the tag out.
    expect(valueFindings({ type: 'disk' }, 'UV')).toEqual([]);
    expect(valueFindings({ id: 'x', path: '/p' }, 'U')).toEqual([at('command use: argument path', 'is missing')]);
  });

  it('reports a command the schema lacks or deprecates', () => {
    const schema = schemaWith({ name: 'old', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0', features: ['deprecated', 'unstable'] });
    expect(checkArguments(schema, 'old', {})).toEqual([at('command old', 'is deprecated')]);
    expect(checkArguments(schema, 'nope', { a: 1 })).toEqual([at('command nope', 'is missing')]);
  });
});

describe('formatFindings', () => {
  it('puts one distinct finding a line, in order of first appearance', () => {
    const findings = [at('a', 'is missing'), at('b', 'is deprecated'), at('a', 'is missing'), at('a', 'is deprecated')];
    expect(formatFindings(findings)).toBe('a is missing\nb is deprecated\na is deprecated');
    expect(formatFindings([])).toBe('');
  });
});
