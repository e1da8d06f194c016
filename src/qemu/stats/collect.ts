// stats() of the QEMU backend: QMP for what QEMU knows (vCPU threads, block I/O, memory devices,
// the balloon), /proc for what the host's kernel knows (thread CPU time, process memory, uptime,
// tap counters). Every source is described in README.md (Statistics).
import type { DeviceConfig, HotplugDeviceConfig, SandboxConfig } from '../../hypervisor/config/index.ts';
import type { NicStats, ProcessMemoryStats, VcpuStats, VmStats } from '../../hypervisor/stats.ts';
import { QmpDisconnectedError, type QmpClient } from '../../qmp/index.ts';
import { taskIds } from '../process/proc-fs.ts';
import { checkVcpuThreadIds } from '../vcpu-threads.ts';
import { balloonOf, balloonQomPath } from './balloon.ts';
import { parseNetDev, readNetDev } from './net-dev.ts';
import { readProcessMemory, readThreadCpuTimes, readUptimeMs, type ProcessRef } from './proc-stats.ts';
import { parseBalloonActual, parseBalloonGuestStats, parseBlockStats, parsePluggedBytes } from './qmp-stats.ts';

const MiB = 1024n * 1024n;

export interface StatsSources {
  qmp: QmpClient;
  signal: AbortSignal;
  config: SandboxConfig;
  /** Devices hot-plugged and still there. */
  hotplugged: readonly HotplugDeviceConfig[];
  qemu: ProcessRef;
  /** The VM's helper daemons, as saved (one that has ended is skipped). */
  helpers: readonly { name: string; deviceId: string; pid: number; startTime: number }[];
  /** svmm-launch, which starts the reader of tap counters inside runtime.netns. */
  launcher: string;
}

export async function collectStats(src: StatsSources): Promise<VmStats> {
  const { qmp, signal, config } = src;
  const devices: (DeviceConfig | HotplugDeviceConfig)[] = [...config.devices, ...src.hotplugged];
  const cpus: unknown = await qmp.execute('query-cpus-fast', undefined, { signal });
  const blockstats: unknown = await qmp.execute('query-blockstats', undefined, { signal });
  const pluggedBytes = config.memory.hotplug === 'none' ? 0n : parsePluggedBytes(await qmp.execute('query-memory-devices', undefined, { signal }));
  const balloon = await balloonStats(qmp, config, signal);
  const nics = await nicStats(devices, config.runtime.netns, src.launcher, signal);

  const threads = checkVcpuThreadIds(cpus, taskIds(src.qemu.pid));
  const vcpus: VcpuStats[] = [];
  for (const [index, threadId] of [...threads].sort(([a], [b]) => a - b)) {
    const times = readThreadCpuTimes(src.qemu, threadId);
    if (times) vcpus.push({ index, threadId, ...times, cpuTimeNs: times.userTimeNs + times.systemTimeNs });
  }
  const processes: ProcessMemoryStats[] = [];
  const qemuMemory = readProcessMemory(src.qemu);
  if (qemuMemory) processes.push({ pid: src.qemu.pid, role: 'hypervisor', ...qemuMemory });
  for (const helper of src.helpers) {
    const memory = readProcessMemory(helper);
    if (memory) processes.push({ pid: helper.pid, role: helper.name, deviceId: helper.deviceId, ...memory });
  }
  const uptimeMs = readUptimeMs(src.qemu);
  // QEMU answered QMP a moment ago, so only its end makes /proc forget it.
  if (uptimeMs === undefined || !qemuMemory) throw new QmpDisconnectedError("QEMU's process is gone");

  const disks = parseBlockStats(
    blockstats,
    devices.filter((d) => d.type === 'block').map((d) => d.id),
  );
  return {
    uptimeMs,
    vcpus,
    processes,
    memory: { bootBytes: BigInt(config.memory.bootMiB) * MiB, pluggedBytes, ...(balloon ? { balloon } : {}) },
    disks,
    nics,
  };
}

async function balloonStats(qmp: QmpClient, config: SandboxConfig, signal: AbortSignal): Promise<VmStats['memory']['balloon']> {
  const balloon = balloonOf(config);
  if (!balloon) return undefined;
  const actualBytes = parseBalloonActual(await qmp.execute('query-balloon', undefined, { signal }));
  if (balloon.statsIntervalSeconds === undefined) return { actualBytes };
  const guest = parseBalloonGuestStats(await qmp.execute('qom-get', { path: balloonQomPath(balloon), property: 'guest-stats' }, { signal }));
  return guest ? { actualBytes, guest } : { actualBytes };
}

/** Counters of each NIC whose tap has a name, read once from the VM's namespace; a tap not there is left out. */
async function nicStats(devices: readonly (DeviceConfig | HotplugDeviceConfig)[], netns: string | undefined, launcher: string, signal: AbortSignal): Promise<NicStats[]> {
  const named = devices.flatMap((d) => (d.type === 'net' && 'ifname' in d.tap ? [{ id: d.id, tap: d.tap.ifname }] : []));
  if (named.length === 0) return [];
  const table = parseNetDev(await readNetDev(netns, launcher, signal, named.map((n) => n.id).join(', ')));
  return named.flatMap(({ id, tap }) => {
    const counters = table.get(tap);
    return counters ? [{ id, tap, ...counters }] : [];
  });
}
