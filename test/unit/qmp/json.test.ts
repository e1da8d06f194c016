// QMP's JSON with exact 64-bit integers: integers outside Number's safe range read as bigints and
// bigints are written as digits; everything else reads and writes exactly as JSON.parse and
// JSON.stringify do (checked on random documents, and on invalid ones).
import { describe, expect, it } from 'vitest';
import { parseExact, parseQmpJson, stringifyQmpJson } from '../../../src/qmp/json.ts';
import { randomString, seededRandom } from '../../helpers/random.ts';

const ALPHABET = ['a', 'Z', '0', '9', ' ', '"', '\\', '/', '\n', '\t', '\u0000', '\u001f', 'é', '€', '😀', '\u2028', '{', '}', '[', ']', ',', ':'];

/** A random JSON document (as a value), with numbers of every kind, big integers included when asked. */
function randomValue(random: () => number, depth: number, bigints: boolean): unknown {
  const pick = Math.floor(random() * (depth > 3 ? 6 : 8));
  switch (pick) {
    case 0:
      return null;
    case 1:
      return random() < 0.5;
    case 2:
      return randomString(random, ALPHABET, 12);
    case 3: {
      const choices: unknown[] = [0, -0.5, 1.5e300, -1e-7, 42, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, Math.floor(random() * 1e15)];
      if (bigints) choices.push(2n ** 53n, 2n ** 64n - 1n, -(2n ** 63n), BigInt(Number.MAX_SAFE_INTEGER) + BigInt(1 + Math.floor(random() * 1e9)));
      return choices[Math.floor(random() * choices.length)];
    }
    case 4:
      return String(Math.floor(random() * 1e17)).padStart(17, '9');
    case 5:
      return Math.floor(random() * 2 ** 31);
    case 6:
      return Array.from({ length: Math.floor(random() * 4) }, () => randomValue(random, depth + 1, bigints));
    default: {
      const object: Record<string, unknown> = {};
      for (let i = Math.floor(random() * 4); i > 0; i--) object[randomString(random, ALPHABET, 6)] = randomValue(random, depth + 1, bigints);
      return object;
    }
  }
}

describe('QMP JSON', () => {
  describe('reading', () => {
    it('keeps integers beyond 2^53 exact, as bigints, and every safe integer a number', () => {
      const text = '{"big": 9007199254740993, "neg": -9007199254740993, "max": 18446744073709551615, "edge": 9007199254740992, "safe": 9007199254740991, "minSafe": -9007199254740991, "small": 42}';
      expect(parseQmpJson(text)).toEqual({
        big: 9007199254740993n,
        neg: -9007199254740993n,
        max: 18446744073709551615n,
        edge: 9007199254740992n,
        safe: Number.MAX_SAFE_INTEGER,
        minSafe: Number.MIN_SAFE_INTEGER,
        small: 42,
      });
    });

    it('reads fractions and exponents as numbers, and digits in strings as strings', () => {
      const text = '[12345678901234567.5, 1e20, 12345678901234567e2, "12345678901234567", -0]';
      const value = parseQmpJson(text) as unknown[];
      expect(value.map((v) => typeof v)).toEqual(['number', 'number', 'number', 'string', 'number']);
      expect(value).toEqual(JSON.parse(text));
      expect(Object.is(value[4], -0)).toBe(true);
    });

    it('reads "__proto__" as an own member, never as the prototype', () => {
      const value = parseExact('{"__proto__": {"polluted": 1}, "n": 12345678901234567890}') as Record<string, unknown>;
      expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
      expect(Object.keys(value)).toEqual(['__proto__', 'n']);
      expect(value['polluted']).toBeUndefined();
      expect(Object.getOwnPropertyDescriptor(value, '__proto__')?.value).toEqual({ polluted: 1 });
    });

    it('reads every random document as JSON.parse does, on the exact path too', () => {
      const random = seededRandom(0x51a7);
      for (let i = 0; i < 2_000; i++) {
        const text = JSON.stringify(randomValue(random, 0, false), null, i % 3 === 0 ? 1 : undefined);
        expect(parseExact(text), text).toEqual(JSON.parse(text));
        expect(parseQmpJson(text), text).toEqual(JSON.parse(text));
      }
    });

    it('skips every kind of JSON whitespace (space, tab, CR, LF) on the exact path', () => {
      const text = ' \t\r\n{ \t\r\n"n" \t\r\n: \t\r\n[ \t\r\n12345678901234567890 \t\r\n, \t\r\ntrue \t\r\n] \t\r\n} \t\r\n';
      expect(parseExact(text)).toEqual({ n: [12345678901234567890n, true] });
    });

    it('says where the exact path found what it refuses', () => {
      const cases: [text: string, message: string][] = [
        ['[1 2]', 'Unexpected token "2" in JSON at position 3'],
        ['{"a" 1}', 'Unexpected token "1" in JSON at position 5'],
        ['[1', 'Unexpected end in JSON at position 2'],
        ['  "abc', 'Unterminated string in JSON at position 2'],
        ['[tru]', 'Unexpected token "t" in JSON at position 1'],
        ['{"a":1,}', 'Unexpected token "}" in JSON at position 7'],
      ];
      for (const [text, message] of cases) expect(() => parseExact(text), text).toThrow(new SyntaxError(message));
    });

    it('refuses what JSON.parse refuses, with a SyntaxError', () => {
      const invalid = [
        '',
        ' ',
        '{',
        '[1,]',
        '{"a":1,}',
        '{a:1}',
        "{'a':1}",
        '[01]',
        '[1.]',
        '[.5]',
        '[-]',
        '[+1]',
        '[1e]',
        '[tru]',
        '[nul]',
        '[NaN]',
        '[Infinity]',
        '["\\x"]',
        '["a\u0001"]',
        '["unterminated]',
        '["\\"]',
        '[1] x',
        '[1 2]',
        '{"a" 1}',
        '{"a":}',
        '{,}',
        '[,1]',
        '1 1',
      ];
      for (const text of invalid) {
        expect(() => {
          JSON.parse(text);
        }, text).toThrow(SyntaxError);
        expect(() => parseExact(text), text).toThrow(SyntaxError);
        // With a big integer in it, so that parseQmpJson takes the exact path as well.
        const withBig = `[12345678901234567890, ${text}]`;
        expect(() => parseQmpJson(withBig), withBig).toThrow(SyntaxError);
      }
    });
  });

  describe('writing', () => {
    it('writes bigints as their digits, and the rest as JSON.stringify does', () => {
      const args = { size: 9007199254740993n, neg: -(2n ** 63n), small: 1n, list: [2n ** 64n - 1n, 'x'], text: 'a"b', skip: undefined, nan: Number.NaN };
      expect(stringifyQmpJson(args)).toBe('{"size":9007199254740993,"neg":-9223372036854775808,"small":1,"list":[18446744073709551615,"x"],"text":"a\\"b","nan":null}');
    });

    it('follows JSON.stringify for toJSON, skipped members, holes and boxed values next to a bigint', () => {
      const value = {
        big: 2n ** 60n,
        date: new Date(0),
        custom: { toJSON: (key: string) => `key:${key}` },
        fn: () => 1,
        sym: Symbol('s'),
        list: [undefined, () => 1, Symbol('t'), null],
        boxed: [new Number(1), new String('s'), new Boolean(false)],
        nested: { inner: { deeper: [1, { x: 2n }] } },
      };
      const { big: _big, nested: _nested, ...rest } = value;
      const expected = `{"big":1152921504606846976,${JSON.stringify(rest).slice(1, -1)},"nested":{"inner":{"deeper":[1,{"x":2}]}}}`;
      expect(stringifyQmpJson(value)).toBe(expected);
    });

    it('round-trips random documents with bigints exactly', () => {
      const random = seededRandom(0xb16);
      for (let i = 0; i < 2_000; i++) {
        const value = { document: randomValue(random, 0, true) };
        const text = stringifyQmpJson(value);
        expect(parseQmpJson(text), text).toEqual(value);
      }
    });

    it('throws TypeError for a cycle, with or without a bigint in it', () => {
      const cyclic: Record<string, unknown> = { n: 1n };
      cyclic['self'] = cyclic;
      expect(() => stringifyQmpJson(cyclic)).toThrow(TypeError);
      const plain: Record<string, unknown> = {};
      plain['self'] = [plain];
      expect(() => stringifyQmpJson(plain)).toThrow(TypeError);
    });

    it('lets an error thrown by a toJSON through as it is, calling that toJSON once', () => {
      let calls = 0;
      const failure = new RangeError('cannot be written');
      const value = {
        toJSON: () => {
          calls++;
          throw failure;
        },
      };
      expect(() => stringifyQmpJson({ value, n: 1n })).toThrow(failure);
      expect(calls).toBe(1);
    });

    it('writes a value without JSON text as null, and a lone bigint as its digits', () => {
      expect(stringifyQmpJson(undefined)).toBe('null');
      expect(stringifyQmpJson(() => 1)).toBe('null');
      expect(stringifyQmpJson(-(2n ** 64n))).toBe('-18446744073709551616');
      expect(stringifyQmpJson('text')).toBe('"text"');
    });

    it('writes a shared (not cyclic) object each time it appears', () => {
      const shared = { n: 2n ** 62n };
      expect(stringifyQmpJson({ a: shared, b: [shared] })).toBe('{"a":{"n":4611686018427387904},"b":[{"n":4611686018427387904}]}');
    });
  });
});
