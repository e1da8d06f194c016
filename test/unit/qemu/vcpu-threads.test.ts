// query-cpus-fast's reply is checked before a runtime pins or moves the threads it names: a QEMU
// that lies must not get another process's thread (pid 1, the runtime's own) pinned or moved.
import { describe, expect, it } from 'vitest';
import { InvalidReplyError } from '../../../src/hypervisor/errors.ts';
import { checkVcpuThreadIds } from '../../../src/qemu/vcpu-threads.ts';

const QEMU_TIDS: ReadonlySet<number> = new Set([4000, 4001, 4002, 4003]);
const cpu = (index: unknown, tid: unknown, extra: Record<string, unknown> = {}) => ({
  'cpu-index': index,
  'qom-path': `/machine/unattached/device[${String(index)}]`,
  'thread-id': tid,
  target: 'x86_64',
  ...extra,
});

function invalid(cpus: unknown, tids: ReadonlySet<number> = QEMU_TIDS): InvalidReplyError {
  try {
    checkVcpuThreadIds(cpus, tids);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidReplyError);
    expect((error as InvalidReplyError).code).toBe('INVALID_REPLY');
    expect((error as InvalidReplyError).command).toBe('query-cpus-fast');
    return error as InvalidReplyError;
  }
  throw new Error('the reply was accepted');
}

describe('checkVcpuThreadIds', () => {
  it("maps each vCPU index to its thread when every thread is QEMU's", () => {
    const threads = checkVcpuThreadIds([cpu(0, 4001), cpu(1, 4002), cpu(3, 4003, { props: { 'core-id': 3 } })], QEMU_TIDS);
    expect([...threads]).toEqual([
      [0, 4001],
      [1, 4002],
      [3, 4003],
    ]);
  });

  it('accepts vCPUs sharing one thread (single-threaded TCG) and an empty list', () => {
    expect([...checkVcpuThreadIds([cpu(0, 4001), cpu(1, 4001)], QEMU_TIDS)]).toEqual([
      [0, 4001],
      [1, 4001],
    ]);
    expect(checkVcpuThreadIds([], QEMU_TIDS).size).toBe(0);
  });

  it('refuses pid 1, or any thread that is not one of QEMU\'s tasks, naming it', () => {
    expect(invalid([cpu(0, 4001), cpu(1, 1)]).message).toBe(
      "the hypervisor's reply to query-cpus-fast is invalid: [1]['thread-id'] is 1, which is not a thread of the QEMU process",
    );
    expect(invalid([cpu(0, process.pid)]).message).toContain(`is ${process.pid}, which is not a thread`);
    // QEMU gone: /proc/<qemu>/task listed nothing.
    expect(invalid([cpu(0, 4001)], new Set()).message).toContain('is 4001, which is not a thread');
  });

  it('refuses a duplicate cpu-index', () => {
    expect(invalid([cpu(0, 4001), cpu(0, 4002)]).message).toContain('[1] repeats cpu-index 0');
  });

  it.each([
    ['a nested array', [[0, 1]], "[0] is an array of 2, not an object"],
    ['null for the list', null, 'expected an array of vCPUs, got null'],
    ['an object for the list', { 0: cpu(0, 4001) }, 'expected an array of vCPUs, got an object'],
    ['a string element', ['0:4001'], '[0] is "0:4001", not an object'],
    ['a null element', [null], '[0] is null, not an object'],
    ['a string thread-id', [cpu(0, '4001')], "[0]['thread-id'] is \"4001\", not an integer > 0"],
    ['a string cpu-index', [cpu('0', 4001)], "[0]['cpu-index'] is \"0\", not an integer >= 0"],
    ['a missing thread-id', [{ 'cpu-index': 0 }], "[0]['thread-id'] is missing"],
    ['a missing cpu-index', [{ 'thread-id': 4001 }], "[0]['cpu-index'] is missing"],
    ['thread-id 0', [cpu(0, 0)], "[0]['thread-id'] is 0, not an integer > 0"],
    ['a negative thread-id', [cpu(0, -4001)], "[0]['thread-id'] is -4001"],
    ['a fractional thread-id', [cpu(0, 4001.5)], "[0]['thread-id'] is 4001.5"],
    ['a thread-id beyond 2^53', [cpu(0, 2 ** 53)], "[0]['thread-id'] is 9007199254740992"],
    ['a negative cpu-index', [cpu(-1, 4001)], "[0]['cpu-index'] is -1, not an integer >= 0"],
    ['a nested array as thread-id', [cpu(0, [[4001]])], "[0]['thread-id'] is an array of 1"],
    ['a boolean cpu-index', [cpu(true, 4001)], "[0]['cpu-index'] is true"],
    ['a very long string', [cpu(0, 'x'.repeat(10_000))], `is "${'x'.repeat(40)}…"`],
  ])('refuses %s', (_, cpus, message) => {
    expect(invalid(cpus).message).toContain(message);
  });

  it('ignores inherited fields (only the reply\'s own count)', () => {
    const inherited = Object.create({ 'cpu-index': 0, 'thread-id': 4001 }) as object;
    expect(invalid([inherited]).message).toContain("[0]['cpu-index'] is missing");
  });
});
