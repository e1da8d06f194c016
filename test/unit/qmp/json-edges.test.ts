// QMP JSON where its own code could drift from JSON.parse / JSON.stringify: the 16-digit test that
// picks the exact path, multi-digit fractions and exponents on that path, member descriptors,
// escaped quotes at a string's end, and the cycle error's message.
import { describe, expect, it } from 'vitest';
import { parseExact, parseQmpJson, stringifyQmpJson } from '../../../src/qmp/json.ts';

/** The error `fn` throws. */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a throw');
}

describe('QMP JSON edges', () => {
  it('leaves any line without a run of 16 digits to JSON.parse itself (same value, same error)', () => {
    for (const text of ['{"a":1,}', '[123456789012345,]', '{"size":1 2}']) {
      const ours = thrown(() => parseQmpJson(text));
      const native = thrown(() => JSON.parse(text));
      expect(ours, text).toBeInstanceOf(SyntaxError);
      expect(ours.message, text).toBe(native.message);
    }
    expect(parseQmpJson('[999999999999999, -999999999999999]')).toEqual([999999999999999, -999999999999999]);
  });

  it('reads multi-digit fractions and signed exponents exactly as JSON.parse, next to a big integer', () => {
    const numbers = '1.25, -0.125, 3.14159, 1.5e3, 2.5E-3, 6.02e+23, 0, -0, 10, 1e2';
    const value = parseQmpJson(`[12345678901234567, ${numbers}]`) as unknown[];
    expect(value[0]).toBe(12345678901234567n);
    expect(value.slice(1)).toEqual(JSON.parse(`[${numbers}]`));
    expect(Object.is(value[8], -0)).toBe(true);
  });

  it('refuses "1.", ".5", "01", "-" and "1e" on the exact path as JSON.parse does', () => {
    for (const bad of ['1.', '.5', '01', '-', '1e', '1.e3', '-.5']) {
      expect(() => JSON.parse(`[${bad}]`) as unknown, bad).toThrow(SyntaxError);
      expect(() => parseExact(`[12345678901234567, ${bad}]`), bad).toThrow(SyntaxError);
    }
  });

  it('gives parsed members the descriptors JSON.parse gives: writable, enumerable, configurable', () => {
    const text = '{"size":12345678901234567,"name":"x"}';
    const ours = parseQmpJson(text) as Record<string, unknown>;
    const native = JSON.parse(text) as Record<string, unknown>;
    for (const key of ['size', 'name']) {
      const { writable, enumerable, configurable } = Object.getOwnPropertyDescriptor(ours, key) ?? {};
      const oursRest = { writable, enumerable, configurable };
      const expected = Object.getOwnPropertyDescriptor(native, key) ?? {};
      const nativeRest = { writable: expected.writable, enumerable: expected.enumerable, configurable: expected.configurable };
      expect(oursRest, key).toEqual(nativeRest);
      expect(oursRest, key).toEqual({ writable: true, enumerable: true, configurable: true });
    }
    ours['name'] = 'changed';
    delete ours['size'];
    expect(ours).toEqual({ name: 'changed' });
  });

  it('ends a string at the first quote not escaped, however many backslashes precede it', () => {
    for (const content of ['a\\"b', '\\\\', 'a\\\\\\"', '\\\\\\\\', '\\"', '']) {
      const text = `{"s":"${content}","n":12345678901234567}`;
      expect(parseExact(text), text).toEqual({ ...(JSON.parse(text) as object), n: 12345678901234567n });
    }
  });

  it('names a cycle as JSON.stringify does, also when a bigint sent it to our own writer', () => {
    const cyclic: Record<string, unknown> = { n: 1n };
    cyclic['self'] = { back: cyclic };
    expect(thrown(() => stringifyQmpJson(cyclic)).message).toMatch(/^Converting circular structure to JSON/);
  });

  it('calls a top-level toJSON with the key "" as JSON.stringify does, also on the bigint path', () => {
    const keys: string[] = [];
    const value = {
      toJSON: (key: string) => {
        keys.push(key);
        return { n: 1n };
      },
    };
    expect(stringifyQmpJson(value)).toBe('{"n":1}');
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((key) => key === '')).toBe(true);
  });

  it('writes undefined members and arguments as JSON.stringify does, with or without a bigint', () => {
    expect(stringifyQmpJson({ execute: 'x', arguments: undefined, id: 1 })).toBe('{"execute":"x","id":1}');
    expect(stringifyQmpJson({ execute: 'x', arguments: undefined, id: 1n })).toBe('{"execute":"x","id":1}');
    expect(stringifyQmpJson(undefined)).toBe('null');
    expect(stringifyQmpJson({ n: 1n })).toBe('{"n":1}');
  });
});
