// Explicit PCI addresses on q35's root bus, so the layout is deterministic and never depends on the
// order in which QEMU auto-assigns slots. Slot 0 is the host bridge and 0x1f the ICH9 functions;
// root ports are packed eight to a slot as functions of one multifunction device. What goes where
// is recorded as the PCI plan, from which guest PCI paths are derived (src/qemu/pci-paths.ts).
import { ConfigError } from '../../hypervisor/config/index.ts';
import type { RootBusFunction } from '../../hypervisor/pci-path.ts';

const FIRST_SLOT = 1;
const LAST_SLOT = 0x1e;
const FUNCTIONS_PER_SLOT = 8;

/** Where the builder put each PCI function, by the qdev id QEMU knows it by. */
export interface PciPlan {
  /** Devices, controllers and root ports on the root bus (pcie.0). */
  readonly rootBus: ReadonlyMap<string, RootBusFunction>;
  /** Cold devices on a root port of their own (VFIO), at slot 0 behind it: device id → port id. */
  readonly behindPort: ReadonlyMap<string, string>;
}

export class PciRootBus {
  #nextSlot = FIRST_SLOT;
  #rootPortSlot: number | undefined;
  #rootPortFunction = FUNCTIONS_PER_SLOT;
  #chassis = 0;
  readonly #rootBus = new Map<string, RootBusFunction>();
  readonly #behindPort = new Map<string, string>();

  /** A whole slot for the device `owner` (its qdev id): `addr=0xNN`. `what` names it in errors. */
  slot(owner: string, what = owner): string {
    const slot = this.#take(what);
    this.#rootBus.set(owner, { slot, function: 0, bridge: false });
    return `0x${slot.toString(16)}`;
  }

  /** The address of the root port `owner` (functions 0-7 of a shared slot), and whether it opens the slot. */
  rootPort(owner: string, what = owner): { addr: string; multifunction: boolean; chassis: number } {
    if (this.#rootPortFunction === FUNCTIONS_PER_SLOT) {
      this.#rootPortSlot = this.#take(what);
      this.#rootPortFunction = 0;
    }
    const slot = this.#rootPortSlot ?? 0;
    const fn = this.#rootPortFunction++;
    this.#rootBus.set(owner, { slot, function: fn, bridge: true });
    return { addr: `0x${slot.toString(16)}.${fn}`, multifunction: fn === 0, chassis: ++this.#chassis };
  }

  /** Records that `deviceId` sits at slot 0 behind the root port `portId`. */
  behind(deviceId: string, portId: string): void {
    this.#behindPort.set(deviceId, portId);
  }

  get plan(): PciPlan {
    return { rootBus: new Map(this.#rootBus), behindPort: new Map(this.#behindPort) };
  }

  #take(what: string): number {
    if (this.#nextSlot > LAST_SLOT) {
      throw new ConfigError([{ path: 'devices', message: `no PCI slot left on the root bus for ${what}: too many devices (at most ${LAST_SLOT - FIRST_SLOT + 1} slots)` }]);
    }
    return this.#nextSlot++;
  }
}
