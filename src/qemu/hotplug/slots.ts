// PCIe root ports reserved at boot (rp0…rpN-1) are the only places a PCI device can be hot-added
// on q35. Which are taken is derived from the hotplug state, never kept separately, so it cannot
// drift, and a re-attached process sees the same picture.
//
// A slot a device just left is not ready for the next one: the guest still acts on the slot's last
// hotplug events for a while (a stale ACPI Eject request ejects whatever the slot then holds;
// pciehp ignores presence changes for a second after powering a slot off). So a freed slot is
// handed out last, and a hot-add into one freed less than the machine's freedSlotSettleMs ago waits
// out the rest. When each slot was freed is known to this process only: a process that re-attaches
// starts without that history.
import { FreedRootPorts, pickFreeRootPort } from '../../hypervisor/resources.ts';
import { sleep } from '../../util/deadline.ts';
import type { HotplugContext } from './context.ts';
import type { HotplugState } from './state.ts';

export { rootPortIds } from '../../hypervisor/resources.ts';

/** Kept with the state it describes (attach replaces the state, and with it the history). */
const freedPorts = new WeakMap<HotplugState, FreedRootPorts>();

function freedOf(state: HotplugState): FreedRootPorts {
  let freed = freedPorts.get(state);
  if (!freed) {
    freed = new FreedRootPorts();
    freedPorts.set(state, freed);
  }
  return freed;
}

export function usedRootPorts(state: HotplugState): Set<string> {
  return new Set([...state.devices.map((d) => d.bus), ...state.infrastructure.map((d) => d.bus)]);
}

/**
 * Picks a free root port, the one freed longest ago last (pickFreeRootPort). Callers record the
 * device in the state synchronously, before their first await, so two concurrent hotplugs can
 * never be handed the same port.
 */
export function takeRootPort(state: HotplugState, rootPorts: number, deviceId: string): string {
  return pickFreeRootPort(usedRootPorts(state), rootPorts, deviceId, freedOf(state));
}

/** Notes that the guest let go of the device on `bus` now (its DEVICE_DELETED came). */
export function slotFreed(state: HotplugState, bus: string): void {
  freedOf(state).freed(bus);
}

/**
 * Resolves once the guest is done with what last left `bus`: at once for a slot never freed (or
 * freed long enough ago), else after the rest of the machine's freedSlotSettleMs. Rejects with the
 * operation's deadline when that comes first.
 */
export async function slotSettled(ctx: HotplugContext, bus: string): Promise<void> {
  const freedAt = freedOf(ctx.state).freedAt(bus);
  if (freedAt === undefined) return;
  const remainingMs = freedAt + ctx.freedSlotSettleMs - Date.now();
  if (remainingMs <= 0) return;
  ctx.logger.debug({ bus, remainingMs }, 'waiting for the guest to settle the slot a device just left');
  await sleep(remainingMs, ctx.deadline.signal);
}
