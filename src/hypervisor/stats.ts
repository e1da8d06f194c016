// What stats() returns: what one sandbox costs the host and what its devices have moved, every
// figure named with its unit. Amounts that can grow past 2^53 (bytes, nanoseconds, operations,
// packets) are bigints, always, so they stay exact and a caller never has to test which kind it got.
import type { OperationOptions } from '../util/deadline.ts';

/** Options of stats(): bounded like every operation. */
export type StatsOptions = OperationOptions;

/** What `stats()` returns: one sandbox's figures, each named with its unit. */
export interface VmStats {
  /** Milliseconds since the hypervisor process started (the kernel's clock-tick resolution, 10 ms). */
  uptimeMs: number;
  /** One entry per vCPU, by index. */
  vcpus: VcpuStats[];
  /** The hypervisor process first, then each helper daemon (virtiofsd) still running. */
  processes: ProcessMemoryStats[];
  memory: GuestMemoryStats;
  /** One entry per block device (cold and hot-plugged), by device id. */
  disks: DiskStats[];
  /** One entry per NIC whose tap the backend knows by name (`tap.ifname`), by device id. */
  nics: NicStats[];
}

/**
 * Host CPU time of one vCPU's thread (/proc/<pid>/task/<tid>/stat). vCPUs that share a thread
 * (single-threaded TCG) each report that thread's time.
 */
export interface VcpuStats {
  index: number;
  /** The host thread running it (as getThreadIds reports it). */
  threadId: number;
  /** Time the thread spent in user mode (under KVM this includes guest time), in nanoseconds. */
  userTimeNs: bigint;
  /** Time the thread spent in the kernel on its behalf, in nanoseconds. */
  systemTimeNs: bigint;
  /** userTimeNs + systemTimeNs. */
  cpuTimeNs: bigint;
}

/** Memory of one host process of the VM (/proc/<pid>/smaps_rollup). */
export interface ProcessMemoryStats {
  pid: number;
  /** 'hypervisor' (QEMU) or the helper's name ('virtiofsd'). */
  role: string;
  /** The device a helper serves; absent for the hypervisor. */
  deviceId?: string;
  /** Resident set size, in bytes: pages mapped and in RAM, shared ones counted whole. */
  rssBytes: bigint;
  /** Proportional set size, in bytes: shared pages divided among their sharers (sums to the host's use). */
  pssBytes: bigint;
}

/** The guest's memory: what it booted with, what was hot-plugged, and the balloon's view. */
export interface GuestMemoryStats {
  /** The guest's boot memory (memory.bootMiB), in bytes. */
  bootBytes: bigint;
  /** Memory plugged beyond boot, in bytes: DIMMs' sizes, and what the guest plugged of virtio-mem. */
  pluggedBytes: bigint;
  /** Present when the config has a balloon device. */
  balloon?: BalloonStats;
}

/** The balloon's figures, when the VM has a balloon device. */
export interface BalloonStats {
  /** The guest's memory as the balloon leaves it (QEMU's query-balloon `actual`), in bytes. */
  actualBytes: bigint;
  /**
   * What the guest's balloon driver last reported, when the balloon polls it (balloon
   * `statsIntervalSeconds`) and it has reported at least once. Figures the guest leaves out are absent.
   */
  guest?: BalloonGuestStats;
}

/** The guest's own memory statistics, reported through the balloon (when its driver sends them). */
export interface BalloonGuestStats {
  /** When the guest last reported, in seconds since the epoch (the hypervisor's clock). */
  updatedAtSeconds: number;
  swapInBytes?: bigint;
  swapOutBytes?: bigint;
  majorFaults?: bigint;
  minorFaults?: bigint;
  /** Memory the guest does not use at all, in bytes. */
  freeBytes?: bigint;
  /** Memory the guest has, in bytes. */
  totalBytes?: bigint;
  /** Memory the guest could use without swapping (MemAvailable), in bytes. */
  availableBytes?: bigint;
  /** Memory the guest uses for caches it could drop, in bytes. */
  diskCachesBytes?: bigint;
  hugetlbAllocations?: bigint;
  hugetlbFailures?: bigint;
}

/** I/O the guest did on one disk, as the hypervisor's block layer counts it (QEMU: query-blockstats). */
export interface DiskStats {
  id: string;
  readBytes: bigint;
  writeBytes: bigint;
  readOperations: bigint;
  writeOperations: bigint;
  flushOperations: bigint;
  /** Summed duration of the reads, in nanoseconds. */
  readTimeNs: bigint;
  writeTimeNs: bigint;
  flushTimeNs: bigint;
}

/**
 * Traffic of one NIC's tap, as the host's kernel counts it in the VM's network namespace. The tap's
 * point of view: rx is what the guest sent, tx what it was sent.
 */
export interface NicStats {
  id: string;
  tap: string;
  rxBytes: bigint;
  rxPackets: bigint;
  rxErrors: bigint;
  rxDropped: bigint;
  txBytes: bigint;
  txPackets: bigint;
  txErrors: bigint;
  txDropped: bigint;
}
