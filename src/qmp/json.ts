// JSON for QMP with exact 64-bit integers. QAPI's int64/uint64/size values (sizes, guest addresses,
// qom-get values) may exceed 2^53, where JSON.parse rounds (9007199254740993 reads as …992) and
// JSON.stringify throws on a bigint. Here an integer outside Number's safe range reads as a bigint
// and every other number as a number, so most code never meets a bigint; a bigint in arguments is
// written as its digits. Node 20's JSON.parse gives a reviver no source text, so reading exactly
// takes a parser of our own; it only runs on the rare line holding a run of 16 digits (every
// integer outside the safe range has at least 16), every other line goes through JSON.parse.
// Why not json-bigint or lossless-json: see ARCHITECTURE.md (The QMP client).

/** Any integer outside ±(2^53 − 1) has at least 16 digits: a line without such a run is safe for JSON.parse. */
const MAYBE_UNSAFE_INTEGER = /\d{16}/;
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** A string's content is taken as is unless it has an escape, or a control character JSON forbids. */
// eslint-disable-next-line no-control-regex -- matching JSON's forbidden control characters is the point
const NEEDS_DECODING = /[\\\u0000-\u001f]/;

/** JSON.parse, except that integers outside Number's safe range are bigints (exact). */
export function parseQmpJson(text: string): unknown {
  return MAYBE_UNSAFE_INTEGER.test(text) ? parseExact(text) : JSON.parse(text);
}

/**
 * JSON.stringify, except that a bigint is written as its digits (an integer QEMU reads exactly).
 * Throws TypeError for a cycle, as JSON.stringify does.
 */
export function stringifyQmpJson(value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    // A bigint (or a cycle, which the writer below reports the same way JSON.stringify does).
    if (!(error instanceof TypeError)) throw error;
    text = writeValue(value, '', new Set());
  }
  // undefined (or a function) has no JSON text: "null", as it would read inside an array.
  return text ?? 'null';
}

/** The parser behind parseQmpJson, exported for its tests: JSON.parse's grammar, exact integers. */
export function parseExact(text: string): unknown {
  const reader = new Reader(text);
  const value = reader.value();
  reader.end();
  return value;
}

class Reader {
  #at = 0;

  constructor(readonly text: string) {}

  value(): unknown {
    this.#skipSpace();
    switch (this.text[this.#at]) {
      case '{':
        return this.#object();
      case '[':
        return this.#array();
      case '"':
        return this.#string();
      case 't':
        return this.#literal('true', true);
      case 'f':
        return this.#literal('false', false);
      case 'n':
        return this.#literal('null', null);
      default:
        return this.#number();
    }
  }

  end(): void {
    this.#skipSpace();
    if (this.#at < this.text.length) throw this.#unexpected();
  }

  #object(): Record<string, unknown> {
    const object: Record<string, unknown> = {};
    this.#at++;
    this.#skipSpace();
    if (this.#take('}')) return object;
    do {
      this.#skipSpace();
      if (this.text[this.#at] !== '"') throw this.#unexpected();
      const key = this.#string();
      this.#skipSpace();
      if (!this.#take(':')) throw this.#unexpected();
      // An own property even for "__proto__", as JSON.parse makes it: never the object's prototype.
      Object.defineProperty(object, key, { value: this.value(), writable: true, enumerable: true, configurable: true });
      this.#skipSpace();
    } while (this.#take(','));
    if (!this.#take('}')) throw this.#unexpected();
    return object;
  }

  #array(): unknown[] {
    const array: unknown[] = [];
    this.#at++;
    this.#skipSpace();
    if (this.#take(']')) return array;
    do {
      array.push(this.value());
      this.#skipSpace();
    } while (this.#take(','));
    if (!this.#take(']')) throw this.#unexpected();
    return array;
  }

  /** Finds the closing quote; JSON.parse checks and decodes a string with escapes or control characters. */
  #string(): string {
    const start = this.#at;
    let end = this.text.indexOf('"', start + 1);
    while (end !== -1 && isEscaped(this.text, end)) end = this.text.indexOf('"', end + 1);
    if (end === -1) throw new SyntaxError(`Unterminated string in JSON at position ${start}`);
    this.#at = end + 1;
    const content = this.text.slice(start + 1, end);
    return NEEDS_DECODING.test(content) ? (JSON.parse(`"${content}"`) as string) : content;
  }

  #number(): number | bigint {
    NUMBER.lastIndex = this.#at;
    const match = NUMBER.exec(this.text);
    if (!match) throw this.#unexpected();
    this.#at = NUMBER.lastIndex;
    const [digits, fraction, exponent] = match;
    if (fraction !== undefined || exponent !== undefined) return Number(digits);
    const integer = BigInt(digits);
    // Number(digits), not Number(integer): -0 stays -0, as JSON.parse reads it.
    return integer > MAX_SAFE || integer < -MAX_SAFE ? integer : Number(digits);
  }

  #literal<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.#at)) throw this.#unexpected();
    this.#at += word.length;
    return value;
  }

  #take(char: string): boolean {
    if (this.text[this.#at] !== char) return false;
    this.#at++;
    return true;
  }

  #skipSpace(): void {
    for (let c = this.text.charCodeAt(this.#at); c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = this.text.charCodeAt(++this.#at));
  }

  #unexpected(): SyntaxError {
    const found = this.#at < this.text.length ? `token ${JSON.stringify(this.text[this.#at])}` : 'end';
    return new SyntaxError(`Unexpected ${found} in JSON at position ${this.#at}`);
  }
}

/** True when the quote at `index` is preceded by an odd number of backslashes. */
function isEscaped(text: string, index: number): boolean {
  let backslashes = 0;
  while (text.charCodeAt(index - 1 - backslashes) === 0x5c) backslashes++;
  return backslashes % 2 === 1;
}

/** JSON.stringify's rules (toJSON, skipped members, null in arrays, cycles), plus bigints as digits. */
function writeValue(input: unknown, key: string, ancestors: Set<object>): string | undefined {
  const value = hasToJson(input) ? input.toJSON(key) : input;
  if (typeof value === 'bigint') return value.toString();
  if (typeof value !== 'object' || value === null || value instanceof Number || value instanceof String || value instanceof Boolean) {
    const text: string | undefined = JSON.stringify(value);
    return text;
  }
  if (ancestors.has(value)) throw new TypeError('Converting circular structure to JSON');
  ancestors.add(value);
  try {
    if (Array.isArray(value)) return `[${value.map((item: unknown, index) => writeValue(item, String(index), ancestors) ?? 'null').join(',')}]`;
    const members: string[] = [];
    for (const [name, member] of Object.entries(value)) {
      const text = writeValue(member, name, ancestors);
      if (text !== undefined) members.push(`${JSON.stringify(name)}:${text}`);
    }
    return `{${members.join(',')}}`;
  } finally {
    ancestors.delete(value);
  }
}

function hasToJson(value: unknown): value is { toJSON(key: string): unknown } {
  return typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function';
}
