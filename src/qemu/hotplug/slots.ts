// PCIe root ports reserved at boot (rp0…rpN-1) are the only places a PCI device can be hot-added
// on q35. Which are taken is derived from the hotplug state, never kept separately, so it cannot
// drift, and a re-attached process sees the same picture.
import { pickFreeRootPort } from '../../hypervisor/resources.ts';
import type { HotplugState } from './state.ts';

export { rootPortIds } from '../../hypervisor/resources.ts';

export function usedRootPorts(state: HotplugState): Set<string> {
  return new Set([...state.devices.map((d) => d.bus), ...state.infrastructure.map((d) => d.bus)]);
}

/**
 * Picks the first free root port. Callers record the device in the state synchronously, before
 * their first await, so two concurrent hotplugs can never be handed the same port.
 */
export function takeRootPort(state: HotplugState, rootPorts: number, deviceId: string): string {
  return pickFreeRootPort(usedRootPorts(state), rootPorts, deviceId);
}
