// The option renderer: QEMU's escaping (a comma doubled), values it cannot express refused, keys
// that are plain names, nested objects as dotted keys; and a property test that any value comes
// back unchanged when the option string is parsed the way QEMU parses it.
import { describe, expect, it } from 'vitest';
import { escapeOptionValue, renderOptions, UnsafeOptionValueError } from '../../../src/qemu/argv/qemu-opts.ts';
import { parseOptionString, splitOptionString } from '../../helpers/qemu-options.ts';
import { randomString, seededRandom } from '../../helpers/random.ts';

describe('escapeOptionValue', () => {
  it('doubles every comma and leaves everything else as it is', () => {
    expect(escapeOptionValue('a,b')).toBe('a,,b');
    expect(escapeOptionValue(',,')).toBe(',,,,');
    expect(escapeOptionValue(',lead and trail,')).toBe(',,lead and trail,,');
    expect(escapeOptionValue('k=v=w')).toBe('k=v=w');
    expect(escapeOptionValue('dïsk 中 "q" \\ $HOME')).toBe('dïsk 中 "q" \\ $HOME');
    expect(escapeOptionValue('')).toBe('');
  });

  it.each(['a\nb', 'a\rb', 'a\0b', '\n', 'x.img\n,readonly=on'])('refuses %j, which no QEMU option can hold', (value) => {
    expect(() => escapeOptionValue(value)).toThrow(UnsafeOptionValueError);
  });
});

describe('renderOptions', () => {
  it('writes the implied key bare and first, then key=value in order', () => {
    expect(renderOptions({ id: 'd0', driver: 'virtio-blk-pci', bus: 'pcie.0' }, 'driver')).toBe('virtio-blk-pci,id=d0,bus=pcie.0');
    expect(renderOptions({ size: '512M', slots: 2 })).toBe('size=512M,slots=2');
  });

  it('renders booleans as on/off and numbers in decimal, and leaves out undefined values', () => {
    expect(renderOptions({ a: true, b: false, c: 0, d: 1073741824, e: undefined, f: 'x' })).toBe('a=on,b=off,c=0,d=1073741824,f=x');
  });

  it('flattens nested objects into dotted keys, escaping values at every depth', () => {
    expect(
      renderOptions({ driver: 'qcow2', file: { driver: 'file', filename: '/a,b.img', cache: { direct: true, 'no-flush': false } }, 'read-only': true }),
    ).toBe('driver=qcow2,file.driver=file,file.filename=/a,,b.img,file.cache.direct=on,file.cache.no-flush=off,read-only=on');
  });

  it('escapes commas in values, so that a value cannot add an option', () => {
    const rendered = renderOptions({ driver: 'file', filename: '/x.img,readonly=on' });
    expect(rendered).toBe('driver=file,filename=/x.img,,readonly=on');
    expect(parseOptionString(rendered)).toEqual([
      ['driver', 'file'],
      ['filename', '/x.img,readonly=on'],
    ]);
  });

  it('refuses a line break or NUL in a nested value', () => {
    expect(() => renderOptions({ file: { filename: '/a\nb' } })).toThrow(UnsafeOptionValueError);
  });

  it.each(['', 'a,b', 'a=b', 'a b', 'ключ', 'a\nb'])('refuses the key %j', (key) => {
    expect(() => renderOptions({ [key]: 'v' })).toThrow(UnsafeOptionValueError);
    expect(() => renderOptions({ nested: { [key]: 'v' } })).toThrow(UnsafeOptionValueError);
  });

  it.each(['virtio-blk-pci,id=x', 'id=x', 'a b', ''])('refuses the implied value %j, which QEMU would not read as one name', (value) => {
    expect(() => renderOptions({ driver: value, id: 'd0' }, 'driver')).toThrow(UnsafeOptionValueError);
  });

  it('refuses an implied key that is missing or not a string', () => {
    expect(() => renderOptions({ id: 'd0' }, 'driver')).toThrow(UnsafeOptionValueError);
    expect(() => renderOptions({ driver: 1, id: 'd0' }, 'driver')).toThrow(UnsafeOptionValueError);
  });
});

describe('any value round-trips through QEMU option parsing', () => {
  const alphabet = [...'abc,,,,===.:/ _-"\'\\{}[]é中🙂$;&|'];

  it('for 2000 random values at the top level and nested, next to an implied key', () => {
    const random = seededRandom(0x5eed);
    for (let i = 0; i < 2000; i++) {
      const top = randomString(random, alphabet, 24);
      const nested = randomString(random, alphabet, 24);
      const rendered = renderOptions({ driver: 'virtio-blk-pci', top, node: { leaf: nested }, flag: random() < 0.5 }, 'driver');
      const parsed = parseOptionString(rendered, 'driver');
      expect(parsed.map(([key]) => key)).toEqual(['driver', 'top', 'node.leaf', 'flag']);
      expect(parsed[1]?.[1]).toBe(top);
      expect(parsed[2]?.[1]).toBe(nested);
    }
  });

  it('for values made only of separators', () => {
    for (const value of [',', ',,', ',,,', '=', ',=', '=,', ',a=b,', 'x,readonly=on', ',file.driver=nbd']) {
      const rendered = renderOptions({ a: value, b: 'end' });
      expect(splitOptionString(rendered)).toEqual([`a=${value}`, 'b=end']);
    }
  });
});
