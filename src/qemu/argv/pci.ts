// Explicit PCI addresses on q35's root bus, so the layout is deterministic and never depends on the
// order in which QEMU auto-assigns slots. Slot 0 is the host bridge and 0x1f the ICH9 functions;
// root ports are packed eight to a slot as functions of one multifunction device.
import { ConfigError } from '../../hypervisor/config/index.ts';

const FIRST_SLOT = 1;
const LAST_SLOT = 0x1e;
const FUNCTIONS_PER_SLOT = 8;

export class PciRootBus {
  #nextSlot = FIRST_SLOT;
  #rootPortSlot: number | undefined;
  #rootPortFunction = FUNCTIONS_PER_SLOT;
  #chassis = 0;

  /** A whole slot for one device: `addr=0xNN`. */
  slot(what: string): string {
    return `0x${this.#take(what).toString(16)}`;
  }

  /** The address of the next root port (functions 0-7 of a shared slot), and whether it opens the slot. */
  rootPort(what: string): { addr: string; multifunction: boolean; chassis: number } {
    if (this.#rootPortFunction === FUNCTIONS_PER_SLOT) {
      this.#rootPortSlot = this.#take(what);
      this.#rootPortFunction = 0;
    }
    const fn = this.#rootPortFunction++;
    return { addr: `0x${(this.#rootPortSlot ?? 0).toString(16)}.${fn}`, multifunction: fn === 0, chassis: ++this.#chassis };
  }

  #take(what: string): number {
    if (this.#nextSlot > LAST_SLOT) {
      throw new ConfigError([{ path: 'devices', message: `no PCI slot left on the root bus for ${what}: too many devices (at most ${LAST_SLOT - FIRST_SLOT + 1} slots)` }]);
    }
    return this.#nextSlot++;
  }
}
