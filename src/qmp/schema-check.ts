// Holds what the library uses of QMP (surface.ts, and the free-form arguments its builders produce)
// against a QEMU's own `query-qmp-schema`: every command, argument, result member, event and enum
// value must exist there, of the kind the library expects, and none may carry the `deprecated`
// feature. Type names in the introspected schema are opaque ("1", "str", "int"): each is resolved
// through the schema's own entries.
import type { WireMembers, WireShape } from './surface.ts';

/** Commands by name with the arguments sent and the result read: QMP_SURFACE, or a test's own table. */
export type SurfaceTable = Readonly<Record<string, { readonly args: WireMembers | null; readonly ret: WireShape }>>;

/** One thing the library uses that this QEMU lacks, types differently, or deprecates. */
export interface SchemaFinding {
  /** e.g. `command query-status: result.status`, `event SHUTDOWN: data.reason`. */
  where: string;
  problem: string;
}

interface Member {
  name: string;
  type: string;
  features?: string[];
}

interface Entry {
  name: string;
  'meta-type': 'builtin' | 'enum' | 'array' | 'object' | 'alternate' | 'command' | 'event';
  features?: string[];
  'json-type'?: string;
  values?: string[];
  members?: Member[];
  'element-type'?: string;
  tag?: string;
  variants?: { case: string; type: string }[];
  'arg-type'?: string;
  'ret-type'?: string;
  'allow-oob'?: boolean;
}

const isDeprecated = (features: readonly string[] | undefined) => features?.includes('deprecated') === true;

/** A query-qmp-schema result, indexed: types by their opaque name, commands and events by theirs. */
export class QmpSchema {
  /** Keyed by name; `undefined` (a missing type reference) is never a key. */
  readonly #types = new Map<string | undefined, Entry>();
  readonly #commands = new Map<string, Entry>();
  readonly #events = new Map<string, Entry>();

  constructor(entries: unknown) {
    if (!Array.isArray(entries)) throw new TypeError('query-qmp-schema did not return an array');
    for (const raw of entries as Entry[]) {
      // Anything but an object with a string name (null, a number, a string) has no string `name`.
      if (typeof (raw as Partial<Entry> | null)?.name !== 'string') throw new TypeError(`query-qmp-schema entry ${JSON.stringify(raw)} has no name`);
      const table = raw['meta-type'] === 'command' ? this.#commands : raw['meta-type'] === 'event' ? this.#events : this.#types;
      table.set(raw.name, raw);
    }
  }

  type(name: string | undefined): Entry | undefined {
    return this.#types.get(name);
  }

  command(name: string): Entry | undefined {
    return this.#commands.get(name);
  }

  event(name: string): Entry | undefined {
    return this.#events.get(name);
  }
}

/** The members of an object type: its own (a union's base), plus those of the variant `tagValue` selects. */
function membersOf(schema: QmpSchema, entry: Entry, tagValue: unknown): { members: Member[]; unknownCase: boolean } {
  const members = [...(entry.members ?? [])];
  if (!entry.tag || tagValue === undefined) return { members, unknownCase: false };
  const variant = entry.variants?.find((v) => v.case === tagValue);
  const variantType = variant && schema.type(variant.type);
  if (!variantType) return { members, unknownCase: entry.variants !== undefined && !entry.members?.some((m) => m.name === entry.tag && isOpenTag(schema, m.type)) };
  return { members: [...members, ...membersOf(schema, variantType, undefined).members], unknownCase: false };
}

/** A union's tag of type str (not an enum) admits values without a variant of their own. */
function isOpenTag(schema: QmpSchema, type: string): boolean {
  return schema.type(type)?.['meta-type'] === 'builtin';
}

/** A builtin by its name ("int"), anything else by its meta-type ("an enum", "an object"). */
function describeEntry(entry: Entry): string {
  return entry['meta-type'] === 'builtin' ? entry.name : `an ${entry['meta-type']}`;
}

function describeShape(shape: WireShape): string {
  if (typeof shape === 'string') return shape;
  if ('enum' in shape) return 'an enum';
  if ('array' in shape) return 'an array';
  return 'an object';
}

const INTEGER = 'int';

/** A finding that the value at `where` itself is of another kind: that alternate branch does not apply. */
const isKindMismatch = (finding: SchemaFinding, where: string) => finding.where === where.trimEnd() && finding.problem.includes(' in the schema, the library ');

/** `where` of a member: a prefix ending in a space or dot ("command x: argument ") takes the name as it is. */
const child = (where: string, name: string) => (where.endsWith(' ') || where.endsWith('.') ? `${where}${name}` : `${where}.${name}`);

/** Whether a builtin (by its json-type) carries what a shape's kind needs. */
function builtinFits(entry: Entry, shape: 'str' | 'int' | 'number' | 'bool'): boolean {
  const json = entry['json-type'];
  switch (shape) {
    case 'str':
      return json === 'string';
    case 'int':
      return json === INTEGER;
    case 'number':
      return json === 'number' || json === INTEGER;
    case 'bool':
      return json === 'boolean';
  }
}

class Checker {
  readonly findings: SchemaFinding[] = [];
  /** Shape objects already held against a type: PciDeviceInfo's bridge holds PciDeviceInfo again. */
  readonly #seen = new WeakMap<object, Set<string>>();

  constructor(readonly schema: QmpSchema) {}

  add(where: string, problem: string): void {
    this.findings.push({ where: where.trimEnd(), problem });
  }

  /** The type named `typeName` exists and is not deprecated; undefined (after a finding) otherwise. */
  resolve(where: string, typeName: string | undefined): Entry | undefined {
    const entry = this.schema.type(typeName);
    if (!entry) {
      this.add(where, `refers to type ${String(typeName)}, which the schema does not define`);
      return undefined;
    }
    if (isDeprecated(entry.features)) this.add(where, 'is deprecated (its type carries the deprecated feature)');
    return entry;
  }

  shape(where: string, shape: WireShape, typeName: string | undefined): void {
    const entry = this.resolve(where, typeName);
    // 'any': the library passes the value through without looking inside, whatever its type.
    if (!entry || shape === 'any') return;
    if (typeof shape === 'object') {
      const seen = this.#seen.get(shape) ?? new Set<string>();
      if (seen.has(entry.name)) return;
      seen.add(entry.name);
      this.#seen.set(shape, seen);
    }
    if (entry['meta-type'] === 'alternate') {
      // One of its branches must carry the shape; report against the first that has the right kind.
      const branches = (entry.members ?? []).map((m) => m.type);
      const trial = branches.map((type) => {
        const sub = new Checker(this.schema);
        sub.shape(where, shape, type);
        return sub.findings;
      });
      const fits = trial.find((findings) => findings.length === 0);
      if (fits) return;
      const sameKind = trial.find((findings) => !findings.some((f) => isKindMismatch(f, where)));
      if (sameKind) this.findings.push(...sameKind);
      else this.add(where, `is an alternate, and none of its branches is ${describeShape(shape)}`);
      return;
    }
    if (typeof shape === 'string') {
      const fits = entry['meta-type'] === 'builtin' ? builtinFits(entry, shape) : shape === 'str' && entry['meta-type'] === 'enum';
      if (!fits) this.add(where, `is ${describeEntry(entry)} in the schema, the library expects ${shape}`);
      return;
    }
    if ('enum' in shape) {
      // Only builtins carry a json-type: a plain string type takes any value.
      if (entry['json-type'] === 'string') return;
      if (entry['meta-type'] !== 'enum') return this.add(where, `is ${describeEntry(entry)} in the schema, the library expects an enum`);
      for (const value of shape.enum) this.enumValue(where, entry, value);
      return;
    }
    if ('array' in shape) {
      if (entry['meta-type'] !== 'array') return this.add(where, `is ${describeEntry(entry)} in the schema, the library expects an array`);
      this.shape(`${where}[]`, shape.array, entry['element-type']);
      return;
    }
    if (entry['meta-type'] !== 'object') return this.add(where, `is ${describeEntry(entry)} in the schema, the library expects an object`);
    // A union whose tag the library always sends with one value: its members are that variant's alone.
    const tagShape = entry.tag === undefined ? undefined : shape.object[entry.tag];
    const fixedTag = typeof tagShape === 'object' && 'enum' in tagShape && tagShape.enum.length === 1 ? tagShape.enum[0] : undefined;
    this.members(where, shape.object, entry, fixedTag);
    for (const [tagValue, members] of Object.entries(shape.cases ?? {})) {
      const variant = entry.variants?.find((v) => v.case === tagValue);
      const variantType = variant && this.schema.type(variant.type);
      if (!variantType) {
        this.add(where, `has no variant ${entry.tag ?? 'tag'}=${tagValue}`);
        continue;
      }
      this.members(`${where}(${String(entry.tag)}=${tagValue})`, members, variantType, undefined);
    }
  }

  enumValue(where: string, entry: Entry, value: string): void {
    if (!(entry.values ?? []).includes(value)) return this.add(where, `has no value '${value}'`);
    const member = entry.members?.find((m) => m.name === value);
    if (isDeprecated(member?.features)) this.add(where, `value '${value}' is deprecated`);
  }

  /**
   * Members named by the library, looked up in the object's own members, else in its variants'; with
   * `tagValue` (the one value the library sends the tag with) in that variant's alone.
   */
  members(where: string, wanted: WireMembers, entry: Entry, tagValue: unknown): void {
    const own = membersOf(this.schema, entry, tagValue).members;
    for (const [name, shape] of Object.entries(wanted)) {
      const at = child(where, name);
      const found = own.filter((m) => m.name === name);
      if (found.length === 0 && tagValue === undefined) {
        for (const variant of entry.variants ?? []) {
          const variantType = this.schema.type(variant.type);
          if (variantType) found.push(...membersOf(this.schema, variantType, undefined).members.filter((m) => m.name === name));
        }
      }
      if (found.length === 0) {
        this.add(at, 'is missing');
        continue;
      }
      for (const member of found) {
        if (isDeprecated(member.features)) this.add(at, 'is deprecated');
        this.shape(at, shape, member.type);
      }
    }
  }

  /** An actual value (free-form arguments the builders produce) against the type it is sent as. */
  value(where: string, value: unknown, typeName: string | undefined): void {
    const entry = this.resolve(where, typeName);
    if (!entry) return;
    switch (entry['meta-type']) {
      case 'builtin': {
        const json = entry['json-type'];
        const fits =
          json === 'value' ||
          (json === 'string' && typeof value === 'string') ||
          (json === 'boolean' && typeof value === 'boolean') ||
          (json === INTEGER && (typeof value === 'bigint' || Number.isInteger(value))) ||
          (json === 'number' && typeof value === 'number') ||
          (json === 'null' && value === null);
        if (!fits) this.add(where, `is ${entry.name} in the schema, the library sends ${JSON.stringify(value)}`);
        return;
      }
      case 'enum':
        if (typeof value !== 'string') return this.add(where, `is an enum in the schema, the library sends ${JSON.stringify(value)}`);
        return this.enumValue(where, entry, value);
      case 'array':
        if (!Array.isArray(value)) return this.add(where, `is an array in the schema, the library sends ${JSON.stringify(value)}`);
        value.forEach((element, i) => this.value(`${where}[${i}]`, element, entry['element-type']));
        return;
      case 'alternate': {
        const trial = (entry.members ?? []).map((m) => {
          const sub = new Checker(this.schema);
          sub.value(where, value, m.type);
          return sub.findings;
        });
        if (trial.some((findings) => findings.length === 0)) return;
        // The branch of the value's kind explains best (e.g. BlockdevRef's object branch for an object).
        const sameKind = trial.find((findings) => !findings.some((f) => isKindMismatch(f, where)));
        if (sameKind) this.findings.push(...sameKind);
        else this.add(where, `is an alternate with no branch for ${JSON.stringify(value)}`);
        return;
      }
      case 'object': {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) return this.add(where, `is an object in the schema, the library sends ${JSON.stringify(value)}`);
        const fields = value as Record<string, unknown>;
        const tagValue = entry.tag === undefined ? undefined : fields[entry.tag];
        const { members, unknownCase } = membersOf(this.schema, entry, tagValue);
        if (unknownCase) return this.add(where, `has no variant ${String(entry.tag)}=${String(tagValue)}`);
        for (const [name, field] of Object.entries(fields)) {
          const at = child(where, name);
          const member = members.find((m) => m.name === name);
          if (!member) {
            this.add(at, 'is missing');
            continue;
          }
          if (isDeprecated(member.features)) this.add(at, 'is deprecated');
          this.value(at, field, member.type);
        }
        return;
      }
      default:
        this.add(where, `refers to ${entry['meta-type']} ${entry.name}, not a type`);
    }
  }
}

function commandEntry(checker: Checker, command: string): Entry | undefined {
  const entry = checker.schema.command(command);
  if (!entry) {
    checker.add(`command ${command}`, 'is missing');
    return undefined;
  }
  if (isDeprecated(entry.features)) checker.add(`command ${command}`, 'is deprecated');
  return entry;
}

/** Every command of the surface with its arguments and result members, every event with its data, and out-of-band use. */
export function checkSurface(
  schema: QmpSchema,
  surface: SurfaceTable,
  events: Readonly<Record<string, WireMembers>>,
  oobCommands: readonly string[],
): SchemaFinding[] {
  const checker = new Checker(schema);
  for (const command of oobCommands) {
    const entry = schema.command(command);
    if (entry && entry['allow-oob'] !== true) checker.add(`command ${command}`, 'is not allowed out-of-band (allow-oob), which the library sends it as');
  }
  for (const [command, use] of Object.entries(surface)) {
    const entry = commandEntry(checker, command);
    if (!entry) continue;
    if (use.args !== null) {
      const argType = checker.resolve(`command ${command}: arguments`, entry['arg-type']);
      if (argType) checker.members(`command ${command}: argument `, use.args, argType, undefined);
    }
    checker.shape(`command ${command}: result`, use.ret, entry['ret-type']);
  }
  for (const [event, data] of Object.entries(events)) {
    const entry = schema.event(event);
    if (!entry) {
      checker.add(`event ${event}`, 'is missing');
      continue;
    }
    if (isDeprecated(entry.features)) checker.add(`event ${event}`, 'is deprecated');
    const dataType = checker.resolve(`event ${event}: data`, entry['arg-type']);
    if (dataType) checker.members(`event ${event}: data.`, data, dataType, undefined);
  }
  return checker.findings;
}

/** Arguments the library sends to `command`, as they are: every member (nested too) checked by value. */
export function checkArguments(schema: QmpSchema, command: string, args: Record<string, unknown>): SchemaFinding[] {
  const checker = new Checker(schema);
  const entry = commandEntry(checker, command);
  if (entry) checker.value(`command ${command}: argument `, args, entry['arg-type']);
  return checker.findings;
}

/** One line per distinct finding (variants of one builder repeat theirs), for a failure that lists everything at once. */
export function formatFindings(findings: readonly SchemaFinding[]): string {
  return [...new Set(findings.map((f) => `${f.where} ${f.problem}`))].join('\n');
}
