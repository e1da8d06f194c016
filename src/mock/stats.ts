// The mock's stats(): the same shape as the QEMU backend's, from the simulated machine. vCPU time
// is the time the guest's vCPUs ran; memory follows what the guest has plugged; disk and NIC
// counters move only by simulateGuestIo (a test's stand-in for a guest doing I/O).
import type { DiskStats, NicStats, VmStats } from '../hypervisor/stats.ts';
import type { MockMachine } from './machine.ts';

const MiB = 1024n * 1024n;
const NS_PER_MS = 1_000_000n;

/** I/O a test says the guest did on one device; every amount is added to the device's counters. */
export interface MockGuestIo {
  readBytes?: number;
  writeBytes?: number;
  /** As the tap counts it: what the guest sent. */
  rxBytes?: number;
  /** As the tap counts it: what the guest was sent. */
  txBytes?: number;
}

type DiskCounters = Omit<DiskStats, 'id'>;
type NicCounters = Omit<NicStats, 'id' | 'tap'>;

/** The counters kept for `id`, made by `zero` on first use. */
function counterOf<T>(counters: Map<string, T>, id: string, zero: () => T): T {
  let found = counters.get(id);
  if (!found) {
    found = zero();
    counters.set(id, found);
  }
  return found;
}

/** The counters of the devices of one machine, zero until the guest "does" I/O. */
export class MockDeviceCounters {
  readonly #disks = new Map<string, DiskCounters>();
  readonly #nics = new Map<string, NicCounters>();

  disk(id: string): DiskCounters {
    return counterOf(this.#disks, id, () => ({ readBytes: 0n, writeBytes: 0n, readOperations: 0n, writeOperations: 0n, flushOperations: 0n, readTimeNs: 0n, writeTimeNs: 0n, flushTimeNs: 0n }));
  }

  nic(id: string): NicCounters {
    return counterOf(this.#nics, id, () => ({ rxBytes: 0n, rxPackets: 0n, rxErrors: 0n, rxDropped: 0n, txBytes: 0n, txPackets: 0n, txErrors: 0n, txDropped: 0n }));
  }

  /** Adds `io` to device `type`'s counters: one operation or packet per call and direction. */
  add(type: 'block' | 'net', id: string, io: MockGuestIo): void {
    const step = (bytes: number | undefined) => (bytes && bytes > 0 ? [BigInt(bytes), 1n] : [0n, 0n]);
    if (type === 'block') {
      const d = this.disk(id);
      const [read, reads] = step(io.readBytes) as [bigint, bigint];
      const [written, writes] = step(io.writeBytes) as [bigint, bigint];
      Object.assign(d, { readBytes: d.readBytes + read, readOperations: d.readOperations + reads, writeBytes: d.writeBytes + written, writeOperations: d.writeOperations + writes });
    } else {
      const n = this.nic(id);
      const [rx, rxPackets] = step(io.rxBytes) as [bigint, bigint];
      const [tx, txPackets] = step(io.txBytes) as [bigint, bigint];
      Object.assign(n, { rxBytes: n.rxBytes + rx, rxPackets: n.rxPackets + rxPackets, txBytes: n.txBytes + tx, txPackets: n.txPackets + txPackets });
    }
  }
}

export function mockStats(machine: MockMachine, vcpuCount: number, now = Date.now()): VmStats {
  const { config, state, process } = machine;
  const cpuTimeNs = BigInt(Math.floor(machine.guest.ranMs(now))) * NS_PER_MS;
  const guestBytes = BigInt(machine.memoryMiB()) * MiB;
  const pluggedMiB = config.memory.hotplug === 'virtio-mem' ? state.virtioMemPluggedMiB : state.dimms.reduce((sum, size) => sum + size, 0);
  const present = state.devices.filter((d) => !d.ejected).map((d) => d.device);
  const devices = [...config.devices, ...present];
  const balloon = config.devices.find((d) => d.type === 'balloon');
  return {
    uptimeMs: Math.max(0, now - process.startedAt),
    vcpus: Array.from({ length: vcpuCount }, (_, index) => ({ index, threadId: process.threadId(index), userTimeNs: cpuTimeNs, systemTimeNs: 0n, cpuTimeNs })),
    // The hypervisor's memory is the guest's, as a guest that touched all of it makes QEMU's.
    processes: [{ pid: process.pid, role: 'hypervisor', rssBytes: guestBytes, pssBytes: guestBytes }],
    memory: {
      bootBytes: BigInt(config.memory.bootMiB) * MiB,
      pluggedBytes: BigInt(pluggedMiB) * MiB,
      ...(balloon
        ? {
            balloon: {
              actualBytes: guestBytes,
              ...(balloon.statsIntervalSeconds !== undefined && machine.guest.ranMs(now) > 0
                ? { guest: { updatedAtSeconds: Math.floor(now / 1000), totalBytes: guestBytes, freeBytes: guestBytes / 2n, availableBytes: guestBytes / 2n } }
                : {}),
            },
          }
        : {}),
    },
    disks: devices.filter((d) => d.type === 'block').map((d) => ({ id: d.id, ...machine.counters.disk(d.id) })),
    nics: devices.flatMap((d) => (d.type === 'net' && 'ifname' in d.tap ? [{ id: d.id, tap: d.tap.ifname, ...machine.counters.nic(d.id) }] : [])),
  };
}
