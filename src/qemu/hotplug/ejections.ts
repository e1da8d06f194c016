// A guest can give up a hot-plugged device on its own: it powers the device's slot off (pciehp does
// when a device shows up while the guest is still booting, Kata runtime issue 2890), and QEMU then
// unplugs the device and sends DEVICE_DELETED with no device_del behind it. This settles the books
// for such an ejection: the backends are deleted, the device leaves the state (freeing its slot and
// id), the state is saved, and only then is the caller told (DEVICE_EJECTED).
//
// A DEVICE_DELETED is an ejection only when it names a hot-plugged device no removal asked for:
// hotplugRemoveDevice marks the device before its device_del (removalRequested, kept after a
// removal timeout so that a late release is still that removal's), and a removal that begins once
// an ejection was noticed finds no device.
import type { Logger } from '../../util/logger.ts';
import { Deadline } from '../../util/deadline.ts';
import { DEVICE_EJECTED, type DeviceEjectedData } from '../../hypervisor/types.ts';
import type { QmpClient, QmpEvent } from '../../qmp/index.ts';
import { InvalidReplyError } from '../../hypervisor/errors.ts';
import { SCSI_CONTROLLER_ID } from '../devices/block.ts';
import { within, type HotplugContext } from './context.ts';
import { deleteBackend, deletedEventFor } from './devices.ts';
import { slotFreed } from './slots.ts';
import { isEjecting, markEjecting, type BackendRef, type HotplugState, type HotpluggedDevice } from './state.ts';

/** Where QEMU keeps the devices it was given an id for. */
const PERIPHERALS = '/machine/peripheral';
/** Backend deletion must not hang the books forever on a QEMU that stopped answering. */
const CLEANUP_TIMEOUT_MS = 5_000;

export interface EjectionHost {
  /** The VM's hotplug state now (attach replaces it). */
  state(): HotplugState;
  /** A context for QMP commands under `deadline`; undefined when QEMU is gone or being torn down. */
  context(deadline: Deadline): HotplugContext | undefined;
  /** Persists the state (for re-attach) once a device has left it. */
  saveState(): Promise<void>;
  /** Tells the caller, once the books are settled. */
  report(event: { name: typeof DEVICE_EJECTED; data: DeviceEjectedData }): void;
  /** The VM's logger now (it gains the VM's id at createVM). */
  logger(): Logger;
}

export class EjectionReconciler {
  readonly #host: EjectionHost;
  readonly #pending = new Set<Promise<void>>();

  constructor(host: EjectionHost) {
    this.#host = host;
  }

  /**
   * Looks at every QMP event; acts on a DEVICE_DELETED naming a hot-plugged device (or the SCSI
   * controller the backend added) that no removal is waiting for. What it decides, it decides
   * synchronously, so that a removal or hotplug starting right after sees the outcome.
   */
  onQmpEvent(event: QmpEvent): void {
    if (event.event !== 'DEVICE_DELETED') return;
    this.#noticeGone((id) => deletedEventFor(id)(event));
  }

  /**
   * Catches up with ejections no process heard (the VM had no owner, or its owner died before it
   * saved the state): a hot-plugged device QEMU no longer has, whose removal nobody asked for, is
   * settled as an ejection. Called when a process takes the VM over; QEMU's answer is only trusted
   * to name what it still has.
   */
  async catchUp(qmp: QmpClient, options: { timeoutMs: number }): Promise<void> {
    const reply: unknown = await qmp.execute('qom-list', { path: PERIPHERALS }, options);
    if (!Array.isArray(reply)) throw new InvalidReplyError('qom-list', 'not a list of properties');
    const present = new Set(reply.map((p: unknown) => (p as { name?: unknown } | null)?.name).filter((name) => typeof name === 'string'));
    this.#noticeGone((id) => !present.has(id));
  }

  /** Settles every device `gone` names that no removal is waiting for (and the SCSI controller, with its disks). */
  #noticeGone(gone: (qemuId: string) => boolean): void {
    const state = this.#host.state();
    for (const device of state.devices.filter((d) => gone(d.id) && !isEjecting(d))) {
      if (device.removalRequested) {
        this.#host.logger().debug({ device: device.id }, 'the guest released a device whose removal was asked for: the removal finishes it');
      } else {
        this.#eject(state, [device]);
      }
    }
    const controller = state.infrastructure.find((d) => d.id === SCSI_CONTROLLER_ID && gone(d.id));
    if (controller) {
      // Its disks went with it; the next SCSI disk adds a new controller on a free port.
      state.infrastructure = state.infrastructure.filter((d) => d !== controller);
      slotFreed(state, controller.bus);
      const bus = `${SCSI_CONTROLLER_ID}.0`;
      this.#host.logger().warn({ port: controller.bus }, 'the guest ejected the SCSI controller');
      const disks = state.devices.filter((d) => d.bus === bus && !isEjecting(d) && !d.removalRequested);
      if (disks.length > 0) this.#eject(state, disks);
      else this.#track(this.#save());
    }
  }

  /** Resolves once every ejection noticed so far is settled (and reported). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #eject(state: HotplugState, devices: HotpluggedDevice[]): void {
    for (const device of devices) {
      markEjecting(device);
      // Its slot stays taken until the backends are gone; the guest's settling starts now.
      slotFreed(state, device.bus);
      this.#host.logger().warn({ device: device.id, bus: device.bus }, 'the guest ejected a device on its own');
      this.#track(this.#settle(state, device));
    }
  }

  #track(work: Promise<void>): void {
    this.#pending.add(work);
    void work.finally(() => this.#pending.delete(work));
  }

  async #settle(state: HotplugState, device: HotpluggedDevice): Promise<void> {
    await this.#deleteBackends(device);
    state.devices = state.devices.filter((d) => d !== device);
    await this.#save();
    this.#host.report({ name: DEVICE_EJECTED, data: { id: device.id, type: device.device.type, bus: device.bus } });
  }

  /** Each backend leaves the record once deleted; what fails is logged and left in QEMU. */
  async #deleteBackends(device: HotpluggedDevice): Promise<void> {
    if (device.backends.length === 0) return;
    const deadline = new Deadline(`backend deletion of ejected device ${device.id}`, { timeoutMs: CLEANUP_TIMEOUT_MS });
    try {
      const ctx = this.#host.context(deadline);
      if (!ctx) {
        this.#host.logger().debug({ device: device.id }, 'QEMU is gone: the ejected device’s backends went with it');
        return;
      }
      while (device.backends.length > 0) {
        await deleteBackend(ctx, device.backends[0] as BackendRef, within(ctx));
        device.backends.shift();
      }
    } catch (error) {
      this.#host.logger().error({ err: error, device: device.id, backends: device.backends }, 'the backends of an ejected device could not be deleted');
    } finally {
      deadline.dispose();
    }
  }

  async #save(): Promise<void> {
    try {
      await this.#host.saveState();
    } catch (error) {
      this.#host.logger().error({ err: error }, 'the state could not be saved after an ejection');
    }
  }
}
