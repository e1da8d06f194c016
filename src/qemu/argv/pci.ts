// Explicit PCI addresses on the root bus, so the layout is deterministic and never depends on the
// order in which QEMU auto-assigns slots. Slot 0 is the host bridge (q35's and virt's) and 0x1f
// q35's ICH9 functions (left free on virt as well, so both have the same budget); everything else,
// root ports included, takes a slot of its own at function 0, so that every device's guest PCI
// path is in Kata's form (a slot per hop, function 0 implied). What goes where is recorded as the
// PCI plan, from which guest PCI paths are derived (src/qemu/pci-paths.ts).
import { FIRST_DEVICE_SLOT, LAST_DEVICE_SLOT, rootBusFullError, type RootBusSlot } from '../../hypervisor/pci-path.ts';

/** Where the builder put each PCI device, by the qdev id QEMU knows it by. */
export interface PciPlan {
  /** Devices, controllers and root ports on the root bus (pcie.0). */
  readonly rootBus: ReadonlyMap<string, RootBusSlot>;
  /** Cold devices on a root port of their own (VFIO), at slot 0 behind it: device id → port id. */
  readonly behindPort: ReadonlyMap<string, string>;
}

export class PciRootBus {
  #nextSlot = FIRST_DEVICE_SLOT;
  #rootPorts = 0;
  readonly #rootBus = new Map<string, RootBusSlot>();
  readonly #behindPort = new Map<string, string>();

  /** A slot for the device `owner` (its qdev id): `addr=0xNN`. `what` names it in errors. */
  slot(owner: string, what = owner): string {
    const slot = this.#take(what);
    this.#rootBus.set(owner, { slot, bridge: false });
    return `0x${slot.toString(16)}`;
  }

  /** A slot for the root port `owner`, and its chassis number (1, 2, …: unique among the ports). */
  rootPort(owner: string, what = owner): { addr: string; chassis: number } {
    const slot = this.#take(what);
    this.#rootBus.set(owner, { slot, bridge: true });
    return { addr: `0x${slot.toString(16)}`, chassis: ++this.#rootPorts };
  }

  /** Records that `deviceId` sits at slot 0 behind the root port `portId`. */
  behind(deviceId: string, portId: string): void {
    this.#behindPort.set(deviceId, portId);
  }

  get plan(): PciPlan {
    return { rootBus: new Map(this.#rootBus), behindPort: new Map(this.#behindPort) };
  }

  #take(what: string): number {
    if (this.#nextSlot > LAST_DEVICE_SLOT) throw rootBusFullError(what, this.#rootPorts);
    return this.#nextSlot++;
  }
}
