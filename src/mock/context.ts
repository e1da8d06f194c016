// What a mock hotplug or resize works with, like the QEMU backend's HotplugContext.
import { OperationTimeoutError } from '../errors.ts';
import { DeviceRemovalTimeoutError } from '../hypervisor/errors.ts';
import { Deadline } from '../util/deadline.ts';
import type { MockFaults } from './faults.ts';
import type { MockHostProbe } from './host.ts';
import type { MockMachine, Unpluggable } from './machine.ts';

export interface MockContext {
  machine: MockMachine;
  deadline: Deadline;
  faults: MockFaults;
  host: MockHostProbe;
  /** How long a removal waits for the guest to let go. */
  removalTimeoutMs: number;
  /** The time the operation's commands take; rejects as soon as the deadline passes. */
  delay(): Promise<void>;
}

/**
 * Waits until the guest has let go of `target`, at most the removal timeout. The operation's own
 * deadline (timeout, abort, stop, exit) keeps its error; the removal bound becomes the typed timeout.
 */
export async function waitForRelease(ctx: MockContext, target: Unpluggable, id: string): Promise<void> {
  const bound = new Deadline(`removal of ${id}`, { timeoutMs: ctx.removalTimeoutMs, signal: ctx.deadline.signal });
  try {
    while (!target.released) await bound.race(ctx.machine.nextChange());
  } catch (error) {
    if (ctx.deadline.signal.aborted) throw ctx.deadline.signal.reason;
    if (error instanceof OperationTimeoutError) throw new DeviceRemovalTimeoutError(id, ctx.removalTimeoutMs);
    throw error;
  } finally {
    bound.dispose();
  }
}
