// Reads a QEMU command line back the way QEMU does: an option string is split at single commas
// (a doubled comma is a literal one), each part at its first '='; a first part without '=' is the
// value of the option's implied key. Written independently of src/qemu/argv/qemu-opts.ts, so that
// the tests check the renderer against QEMU's rules rather than against itself.

export interface ParsedOption {
  /** The flag, e.g. '-device'. */
  flag: string;
  /** Its argument as written; undefined for flags that take none. */
  raw: string | undefined;
}

/** Flags of ours that take no argument; every other flag takes exactly one. */
export const VALUELESS_FLAGS: ReadonlySet<string> = new Set(['-S', '-no-user-config', '-nodefaults', '-no-reboot']);

/** Pairs each flag with its argument. Throws on an argument where a flag is expected. */
export function splitArgv(args: readonly string[]): ParsedOption[] {
  const options: ParsedOption[] = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i] as string;
    if (!flag.startsWith('-')) throw new Error(`argv[${i}] should be a flag: ${JSON.stringify(flag)}`);
    if (VALUELESS_FLAGS.has(flag)) {
      options.push({ flag, raw: undefined });
      continue;
    }
    if (i + 1 >= args.length) throw new Error(`${flag} has no argument`);
    options.push({ flag, raw: args[++i] });
  }
  return options;
}

/** Splits at single commas; a doubled comma stands for one literal comma. */
export function splitOptionString(text: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const char = text[i] as string;
    if (char !== ',') {
      current += char;
    } else if (text[i + 1] === ',') {
      current += ',';
      i++;
    } else {
      parts.push(current);
      current = '';
    }
  }
  parts.push(current);
  return parts;
}

/**
 * The key=value pairs of an option string, in order (a repeated key stays repeated). `impliedKey`
 * names the key of a first part written without '=' (driver for -device, qom-type for -object …).
 */
export function parseOptionString(text: string, impliedKey?: string): [string, string][] {
  return splitOptionString(text).map((part, index) => {
    const eq = part.indexOf('=');
    if (eq < 0) {
      if (index === 0 && impliedKey !== undefined) return [impliedKey, part];
      throw new Error(`option part without '=': ${JSON.stringify(part)} in ${JSON.stringify(text)}`);
    }
    return [part.slice(0, eq), part.slice(eq + 1)];
  });
}

/** The implied first key of the options we render with one. */
export const IMPLIED_KEY: Readonly<Record<string, string>> = {
  '-device': 'driver',
  '-netdev': 'type',
  '-chardev': 'backend',
  '-object': 'qom-type',
  '-fsdev': 'driver',
  '-machine': 'type',
  '-accel': 'accel',
  '-display': 'type',
};

/** Flags whose argument QEMU takes verbatim (a file name, the kernel command line), not as options. */
export const VERBATIM_FLAGS: ReadonlySet<string> = new Set(['-kernel', '-initrd', '-append', '-pidfile', '-uuid', '-cpu', '-serial']);

/** An option string as a map; throws if a key repeats (ours never do, and QEMU would take the last). */
export function optionMap(text: string, impliedKey?: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const [key, value] of parseOptionString(text, impliedKey)) {
    if (map.has(key)) throw new Error(`key ${key} repeats in ${JSON.stringify(text)}`);
    map.set(key, value);
  }
  return map;
}

/** Every option of an argv, its argument parsed into keys where QEMU parses it so. */
export interface StructuredOption {
  flag: string;
  /** For verbatim flags and flags without keys. */
  raw: string | undefined;
  props: Map<string, string> | undefined;
}

export function structureArgv(args: readonly string[]): StructuredOption[] {
  return splitArgv(args).map(({ flag, raw }) => {
    if (raw === undefined || VERBATIM_FLAGS.has(flag)) return { flag, raw, props: undefined };
    return { flag, raw, props: optionMap(raw, IMPLIED_KEY[flag]) };
  });
}

/** The -device options, each as its property map. */
export function deviceOptions(args: readonly string[]): Map<string, string>[] {
  return structureArgv(args).flatMap((o) => (o.flag === '-device' && o.props ? [o.props] : []));
}
