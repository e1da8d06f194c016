// The root of every error this library throws. Each error has a stable `code` that callers can
// switch on, and keeps what caused it in the standard `cause` property.
import type { SandboxVmmErrorCode } from './error-codes.ts';

export { ERROR_CODES, type SandboxVmmErrorCode } from './error-codes.ts';

const brand = Symbol.for('sandbox-vmm.error');

/** Options every error of the library takes: the error that caused it, kept as the standard `cause`. */
export interface SandboxVmmErrorOptions {
  cause?: unknown;
}

/**
 * The root of every error this library throws: switch on `code`, which is stable across versions;
 * the class names the kind of failure and `cause` keeps what caused it.
 *
 * `C` is the code of a class's errors: `InvalidStateError.code` is `'INVALID_STATE'`, and a
 * SandboxVmmError of unknown class has any SandboxVmmErrorCode, so a `switch` on it is checked.
 */
export class SandboxVmmError<C extends SandboxVmmErrorCode = SandboxVmmErrorCode> extends Error {
  readonly code: C;

  constructor(code: C, message: string, options: SandboxVmmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = new.target.name;
    Object.defineProperty(this, brand, { value: true });
  }
}

/** True for any error thrown by this library, even one from another copy of it (another realm). */
export function isSandboxVmmError(error: unknown): error is SandboxVmmError {
  return typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[brand] === true;
}

/** A long operation ran past its `timeoutMs`. */
export class OperationTimeoutError extends SandboxVmmError<'TIMEOUT'> {
  readonly operation: string;
  readonly timeoutMs: number;

  constructor(operation: string, timeoutMs: number, options: SandboxVmmErrorOptions = {}) {
    super('TIMEOUT', `${operation} did not finish within ${timeoutMs} ms`, options);
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

/** A long operation was cancelled through its AbortSignal; `cause` is the signal's reason. */
export class OperationAbortedError extends SandboxVmmError<'ABORTED'> {
  readonly operation: string;

  constructor(operation: string, options: SandboxVmmErrorOptions = {}) {
    super('ABORTED', `${operation} was aborted`, options);
    this.operation = operation;
  }
}

/**
 * The caller passed a value the library cannot take (a `timeoutMs` that is NaN, negative or not a
 * number): a mistake to fix in the calling code, never a condition to retry. `argument` names the
 * option.
 */
export class InvalidArgumentError extends SandboxVmmError<'INVALID_ARGUMENT'> {
  readonly argument: string;

  constructor(argument: string, problem: string, options: SandboxVmmErrorOptions = {}) {
    super('INVALID_ARGUMENT', `invalid ${argument}: ${problem}`, options);
    this.argument = argument;
  }
}
