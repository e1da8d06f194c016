// The one rule for a timeoutMs: undefined takes the default, Infinity or beyond 2^31-1 ms means no
// bound, and NaN, a negative number or a non-number is the caller's mistake (InvalidArgumentError
// naming the option), never a silent "no bound".
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InvalidArgumentError, isSandboxVmmError, OperationTimeoutError } from '../../../src/errors.ts';
import { Lifecycle } from '../../../src/hypervisor/lifecycle.ts';
import { Deadline, sleep, type OperationOptions } from '../../../src/util/deadline.ts';
import { checkTimeoutMs, MAX_TIMER_MS, resolveTimeoutMs, startTimeout } from '../../../src/util/timeout.ts';

const INVALID: [string, unknown][] = [
  ['NaN', NaN],
  ['a negative number', -1],
  ['-Infinity', -Infinity],
  ['a numeric string', '100'],
  ['null', null],
  ['a boolean', true],
  ['an object', { ms: 5 }],
];

/** Asserts `error` is the typed mistake naming `argument`, and returns it. */
function expectInvalid(error: unknown, argument: string): InvalidArgumentError {
  expect(error).toBeInstanceOf(InvalidArgumentError);
  expect(isSandboxVmmError(error)).toBe(true);
  const invalid = error as InvalidArgumentError;
  expect(invalid.code).toBe('INVALID_ARGUMENT');
  expect(invalid.argument).toBe(argument);
  expect(invalid.message).toContain(`invalid ${argument}:`);
  return invalid;
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

afterEach(() => {
  vi.useRealTimers();
});

describe('checkTimeoutMs and resolveTimeoutMs', () => {
  it.each(INVALID)('refuses %s, naming the option', (_, value) => {
    expectInvalid(thrown(() => checkTimeoutMs(value, 'timeoutMs')), 'timeoutMs');
    expectInvalid(thrown(() => resolveTimeoutMs(value, 1_000, 'commandTimeoutMs')), 'commandTimeoutMs');
  });

  it('says what it got', () => {
    expect((thrown(() => checkTimeoutMs(NaN)) as Error).message).toMatch(/not NaN$/);
    expect((thrown(() => checkTimeoutMs('100')) as Error).message).toMatch(/not "100"$/);
  });

  it('accepts 0, finite numbers, values beyond the timer range and Infinity', () => {
    for (const value of [0, 1, 2.5, MAX_TIMER_MS, MAX_TIMER_MS + 1, Infinity]) expect(checkTimeoutMs(value)).toBe(value);
  });

  it('falls back to the default only for undefined, and checks the default under its own name', () => {
    expect(resolveTimeoutMs(undefined, 500)).toBe(500);
    expect(resolveTimeoutMs(undefined, undefined)).toBeUndefined();
    expect(resolveTimeoutMs(20, 500)).toBe(20);
    expectInvalid(thrown(() => resolveTimeoutMs(NaN, 500)), 'timeoutMs');
    expectInvalid(thrown(() => resolveTimeoutMs(undefined, NaN, 'timeoutMs', 'defaultTimeoutMs')), 'defaultTimeoutMs');
  });
});

describe('startTimeout', () => {
  it('refuses NaN and negative delays instead of starting no timer (or a 1 ms one)', () => {
    vi.useFakeTimers();
    const fired = vi.fn();
    expectInvalid(thrown(() => startTimeout(NaN, fired)), 'timeoutMs');
    expectInvalid(thrown(() => startTimeout(-5, fired, 'ms')), 'ms');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('starts no timer beyond 2^31-1 ms or for Infinity, and an unref-ed one otherwise', () => {
    vi.useFakeTimers();
    const fired = vi.fn();
    expect(startTimeout(Infinity, fired)).toBeUndefined();
    expect(startTimeout(MAX_TIMER_MS + 1, fired)).toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);
    const timer = startTimeout(10, fired);
    expect(timer?.hasRef()).toBe(false);
    vi.advanceTimersByTime(10);
    expect(fired).toHaveBeenCalledOnce();
  });
});

describe('Deadline', () => {
  it.each(INVALID)('with a timeoutMs that is %s is done at once, its reason naming timeoutMs', (_, timeoutMs) => {
    const deadline = new Deadline('startVM', { timeoutMs: timeoutMs as number }, 30_000);
    expect(deadline.signal.aborted).toBe(true);
    expectInvalid(deadline.signal.reason, 'timeoutMs');
    expectInvalid(thrown(() => deadline.throwIfDone()), 'timeoutMs');
    deadline.dispose();
  });

  it('with an invalid default is done at once, naming defaultTimeoutMs; a valid timeoutMs wins over it', () => {
    const deadline = new Deadline('startVM', {}, NaN);
    expectInvalid(deadline.signal.reason, 'defaultTimeoutMs');
    const overridden = new Deadline('startVM', { timeoutMs: 50 }, NaN);
    expect(overridden.signal.aborted).toBe(false);
    overridden.dispose();
  });

  it('applies the default when timeoutMs is undefined', () => {
    vi.useFakeTimers();
    const deadline = new Deadline('startVM', { timeoutMs: undefined } as unknown as OperationOptions, 100);
    vi.advanceTimersByTime(99);
    expect(deadline.signal.aborted).toBe(false);
    vi.advanceTimersByTime(1);
    expect(deadline.signal.reason).toBeInstanceOf(OperationTimeoutError);
    expect((deadline.signal.reason as OperationTimeoutError).timeoutMs).toBe(100);
    deadline.dispose();
  });

  it('has no bound for Infinity or beyond 2^31-1 ms (and starts no timer that would fire early)', () => {
    vi.useFakeTimers();
    const deadlines = [new Deadline('a', { timeoutMs: Infinity }, 100), new Deadline('b', { timeoutMs: 2 ** 31 })];
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(10 * 24 * 3600 * 1000);
    for (const deadline of deadlines) {
      expect(deadline.signal.aborted).toBe(false);
      deadline.dispose();
    }
  });

  it("reports the invalid timeout even when the caller's signal is already aborted, and listens to nothing", () => {
    const parent = new AbortController();
    const add = vi.spyOn(parent.signal, 'addEventListener');
    const deadline = new Deadline('op', { timeoutMs: NaN, signal: parent.signal });
    expectInvalid(deadline.signal.reason, 'timeoutMs');
    expect(add).not.toHaveBeenCalled();
    deadline.dispose();
  });
});

describe('sleep', () => {
  it.each([NaN, -1])('rejects %s with InvalidArgumentError instead of waking after 1 ms', async (ms) => {
    expectInvalid(await sleep(ms).catch((error: unknown) => error), 'ms');
  });

  it('lasts until aborted for Infinity', async () => {
    const controller = new AbortController();
    const slept = sleep(Infinity, controller.signal);
    const reason = new Error('enough');
    setTimeout(() => controller.abort(reason), 20);
    await expect(slept).rejects.toBe(reason);
  });
});

describe('Lifecycle.run', () => {
  it('rejects a NaN timeoutMs without running the operation', async () => {
    const lifecycle = new Lifecycle();
    const fn = vi.fn(() => new Promise<never>(() => {}));
    expectInvalid(await lifecycle.run('check', ['new'], { timeoutMs: NaN }, 30_000, fn).catch((error: unknown) => error), 'timeoutMs');
    expect(fn).not.toHaveBeenCalled();
  });

  it('rejects an invalid instance default under its own name', async () => {
    const lifecycle = new Lifecycle();
    expectInvalid(await lifecycle.run('check', ['new'], undefined, -1, () => Promise.resolve()).catch((error: unknown) => error), 'defaultTimeoutMs');
  });
});
