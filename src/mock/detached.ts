// Machines handed over with detach(), waiting in this process for attach() to take them over: the
// mock's equivalent of a QEMU left running with its runtime directory.
import type { MockMachine } from './machine.ts';

const detached = new Map<string, MockMachine>();

/** The mock's "runtime directory" of a VM: only a key, nothing exists on disk. */
export function mockRuntimeDir(vmId: string): string {
  return `mock:${vmId}`;
}

export function leaveDetached(runtimeDir: string, machine: MockMachine): void {
  detached.set(runtimeDir, machine);
  // A machine that ends while nobody holds it is gone, like a dead QEMU's directory.
  void machine.process.exited.then(() => {
    if (detached.get(runtimeDir) === machine) detached.delete(runtimeDir);
  });
}

export function takeDetached(runtimeDir: string): MockMachine | undefined {
  const machine = detached.get(runtimeDir);
  detached.delete(runtimeDir);
  return machine;
}
