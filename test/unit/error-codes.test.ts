// Every error code is in one list (src/error-codes.ts), and the list holds only codes an exported
// error class carries: the compiler checks both directions below, and each class's `code` is typed
// as its own literal, so that a `switch` on `code` is checked.
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.ts';
import * as qmp from '../../src/qmp/index.ts';
import { ERROR_CODES, InvalidStateError, isSandboxVmmError, type SandboxVmmErrorCode } from '../../src/index.ts';
import { QmpTimeoutError } from '../../src/qmp/index.ts';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}

/** The exports, but the root class (whose code is any of them). */
type Exports = Omit<typeof api & typeof qmp, 'SandboxVmmError'>;
/** The `code` of every exported class whose instances are library errors. */
type ExportedCodes = {
  [K in keyof Exports]: Exports[K] extends abstract new (...args: never[]) => infer E ? (E extends api.SandboxVmmError<infer C> ? C : never) : never;
}[keyof Exports];

assertType<Equal<ExportedCodes, SandboxVmmErrorCode>>();
assertType<Equal<InvalidStateError['code'], 'INVALID_STATE'>>();
assertType<Equal<qmp.OperationTimeoutError['code'], 'TIMEOUT'>>();
assertType<Equal<api.SandboxVmmError['code'], SandboxVmmErrorCode>>();

/** A switch over every code compiles only while it names each one. */
function describeCode(code: SandboxVmmErrorCode): string {
  switch (code) {
    case 'INVALID_STATE':
      return 'call what the message says first';
    case 'QMP_TIMEOUT':
      return 'QEMU did not answer';
    default:
      return code;
  }
}

describe('error codes', () => {
  it('are listed once each, and an error narrows to its own', () => {
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    const error: unknown = new InvalidStateError('startVM', 'new', ['created']);
    expect(isSandboxVmmError(error) && describeCode(error.code)).toBe('call what the message says first');
    expect(describeCode(new QmpTimeoutError('stop', 5).code)).toBe('QEMU did not answer');
    // @ts-expect-error: a code that is not in the list does not compile
    expect(() => new api.SandboxVmmError('NO_SUCH_CODE', 'x')).not.toThrow();
  });
});
