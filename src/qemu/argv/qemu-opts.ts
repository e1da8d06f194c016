// Renders QMP-style property objects as QEMU's `key=value,…` option strings. The same objects are
// sent over QMP when a device is hot-plugged, so the command line and hotplug cannot drift apart.
// Values are escaped the way QEMU's option parsers expect: a comma is doubled; a newline or NUL
// cannot be expressed at all and is refused.

export type OptionValue = string | number | boolean | undefined | OptionProps;
export interface OptionProps {
  [key: string]: OptionValue;
}

const KEY = /^[A-Za-z0-9_.-]+$/;

/** Thrown when a value cannot be put on a QEMU command line; config validation prevents it. */
export class UnsafeOptionValueError extends Error {}

export function escapeOptionValue(value: string): string {
  if (/[\0\n\r]/.test(value)) throw new UnsafeOptionValueError(`a QEMU option value cannot contain NUL or a line break: ${JSON.stringify(value)}`);
  return value.replaceAll(',', ',,');
}

function renderValue(value: string | number | boolean): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  return escapeOptionValue(String(value));
}

function flatten(props: OptionProps, prefix: string, out: string[]): void {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined) continue;
    if (!KEY.test(key)) throw new UnsafeOptionValueError(`not a QEMU option key: ${JSON.stringify(key)}`);
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === 'object') flatten(value, name, out);
    else out.push(`${name}=${renderValue(value)}`);
  }
}

/**
 * `head` names the implied first key (driver for -device, type for -netdev and -chardev, qom-type
 * for -object): its value is written first and bare, as people write these options by hand.
 * Nested objects become dotted keys (file.filename=…), as -blockdev accepts.
 */
export function renderOptions(props: OptionProps, head?: string): string {
  const parts: string[] = [];
  const rest: OptionProps = { ...props };
  if (head !== undefined) {
    const value = rest[head];
    if (typeof value !== 'string') throw new UnsafeOptionValueError(`option '${head}' must be a string`);
    // A bare first element is only taken as the implied key's value while it holds no '=' (it
    // would become a key) and no ',': it must be a plain name such as a driver or backend type.
    if (!KEY.test(value)) throw new UnsafeOptionValueError(`the ${head} of an option must be a plain name: ${JSON.stringify(value)}`);
    parts.push(value);
    delete rest[head];
  }
  flatten(rest, '', parts);
  return parts.join(',');
}
