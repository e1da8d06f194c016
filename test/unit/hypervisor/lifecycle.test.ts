import { describe, expect, it } from 'vitest';
import { Lifecycle } from '../../../src/hypervisor/lifecycle.ts';
import { Deadline } from '../../../src/util/deadline.ts';
import { InvalidStateError, VmExitedError, VmStoppingError } from '../../../src/hypervisor/errors.ts';
import { OperationAbortedError, OperationTimeoutError } from '../../../src/errors.ts';

const never = () => new Promise<never>(() => {});

describe('Lifecycle', () => {
  it('rejects an operation in a state that does not allow it, naming the state', async () => {
    const lifecycle = new Lifecycle();
    const error = await lifecycle.run('pauseVM', ['running'], {}, undefined, () => Promise.resolve(1)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidStateError);
    expect((error as InvalidStateError).state).toBe('new');
    expect((error as Error).message).toBe('pauseVM is not allowed while the VM is new (allowed: running): call createVM first');
  });

  it('reports every transition once', () => {
    const seen: string[] = [];
    const lifecycle = new Lifecycle((from, to) => seen.push(`${from}>${to}`));
    lifecycle.to('starting');
    lifecycle.to('starting');
    lifecycle.to('running');
    expect(seen).toEqual(['new>starting', 'starting>running']);
  });

  it('times out with OperationTimeoutError naming the operation', async () => {
    const lifecycle = new Lifecycle();
    const error = await lifecycle.run('check', ['new'], { timeoutMs: 20 }, undefined, never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OperationTimeoutError);
    expect((error as Error).message).toBe('check did not finish within 20 ms');
  });

  it('applies the default timeout when the caller gives none', async () => {
    const lifecycle = new Lifecycle();
    await expect(lifecycle.run('check', ['new'], undefined, 10, never)).rejects.toBeInstanceOf(OperationTimeoutError);
  });

  it('is cancelled through the caller signal, keeping the reason as cause', async () => {
    const lifecycle = new Lifecycle();
    const controller = new AbortController();
    const pending = lifecycle.run('resizeVCPUs', ['new'], { signal: controller.signal }, undefined, never);
    const reason = new Error('caller gave up');
    controller.abort(reason);
    const error = await pending.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OperationAbortedError);
    expect((error as Error).cause).toBe(reason);
  });

  it('interrupts pending and later operations with VmStoppingError naming each operation', async () => {
    const lifecycle = new Lifecycle();
    const a = lifecycle.run('hotplugAddDevice', ['new'], {}, undefined, never).catch((e: unknown) => e);
    const b = lifecycle.run('resizeMemory', ['new'], {}, undefined, never).catch((e: unknown) => e);
    lifecycle.interruptPending();
    const [ea, eb] = await Promise.all([a, b]);
    expect(ea).toBeInstanceOf(VmStoppingError);
    expect((ea as Error).message).toContain('hotplugAddDevice');
    expect((eb as Error).message).toContain('resizeMemory');
    await expect(lifecycle.run('check', ['new'], {}, undefined, () => Promise.resolve(1))).rejects.toBeInstanceOf(VmStoppingError);
  });

  it('can interrupt with another error, e.g. the hypervisor having exited', async () => {
    const lifecycle = new Lifecycle();
    const pending = lifecycle.run('check', ['new'], {}, undefined, never).catch((e: unknown) => e);
    lifecycle.interruptPending((operation) => new VmExitedError(operation, { signal: 'SIGKILL' }));
    const error = await pending;
    expect(error).toBeInstanceOf(VmExitedError);
    expect((error as Error).message).toBe('check failed: the hypervisor was killed by SIGKILL');
  });

  it('passes the result through and removes its listeners', async () => {
    const lifecycle = new Lifecycle();
    const controller = new AbortController();
    expect(await lifecycle.run('x', ['new'], { signal: controller.signal, timeoutMs: 1000 }, undefined, () => Promise.resolve(42))).toBe(42);
  });
});

describe('Lifecycle deadlines and the operation’s own errors', () => {
  class ReachedError extends Error {}

  it('lets an operation that honours its deadline report its own, more telling error', async () => {
    const lifecycle = new Lifecycle();
    const error = await lifecycle
      .run('resizeMemory', ['new'], { timeoutMs: 20 }, undefined, (deadline) =>
        new Promise((_, reject) => deadline.signal.addEventListener('abort', () => reject(new ReachedError('stopped at 512 MiB')))),
      )
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReachedError);
  });

  it('cuts off an operation that ignores its deadline with the deadline’s error', async () => {
    const lifecycle = new Lifecycle();
    await expect(lifecycle.run('check', ['new'], { timeoutMs: 20 }, undefined, never)).rejects.toBeInstanceOf(OperationTimeoutError);
  });
});

describe('Deadline', () => {
  it('treats a timeout beyond what a timer can wait as no bound, instead of firing at once', async () => {
    const deadline = new Deadline('long', { timeoutMs: 2 ** 31 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(deadline.signal.aborted).toBe(false);
    deadline.dispose();
  });

  it('keeps a parent reason that already is a typed error', () => {
    const parent = new AbortController();
    const stopping = new VmStoppingError('resizeMemory');
    parent.abort(stopping);
    const deadline = new Deadline('resizeMemory', { signal: parent.signal });
    expect(deadline.signal.reason).toBe(stopping);
    deadline.dispose();
  });
});
