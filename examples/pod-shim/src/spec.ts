// The pod spec the shim reads: a JSON file, the part of a Kubernetes pod a sandbox needs. A real
// runtime gets this from the CRI (RunPodSandbox, CreateContainer, UpdateContainerResources).
import { readFileSync } from 'node:fs';

export interface PodSpec {
  /** Names the pod's network namespace and its VM: 1 to 32 lowercase letters, digits or "-". */
  name: string;
  guest: {
    kernel: string;
    initrd: string;
    kernelParams: string[];
    /** 'kvm' (the library's default) or 'tcg' where KVM is not usable. */
    accel?: 'kvm' | 'tcg';
  };
  resources: {
    vcpus: number;
    memoryMiB: number;
    /** The most the pod may grow to (hotplug headroom reserved at boot). */
    maxVcpus: number;
    maxMemoryMiB: number;
  };
  network: {
    /** The pod's address inside the guest, and the netns side of its tap (what a CNI plugin would set up). */
    guestAddress: string;
    hostAddress: string;
    mac?: string;
  };
  /** The container image as a disk, hot-plugged read-only: it must be readable by the VM's uid. */
  rootfs: { image: string; format?: 'raw' | 'qcow2' };
  /** Scratch disks the shim creates for the pod (sparse, owned by the VM's uid) and deletes with it. */
  volumes: { name: string; sizeMiB: number }[];
  /** One shell line run in the guest; its disks are /dev/pod/rootfs and /dev/pod/<volume name>. */
  command: string;
  /**
   * Serve the VM's statistics for Prometheus at http://<host>:<port>/metrics (port 0: any free
   * port, reported in the 'metrics-listening' event). Absent: no metrics endpoint.
   */
  metrics?: { host: string; port: number };
}

/** Reads and checks a spec file; throws an Error naming the first bad field. */
export function readPodSpec(path: string): PodSpec {
  const spec = JSON.parse(readFileSync(path, 'utf8')) as PodSpec;
  const bad = (field: string, rule: string): never => {
    throw new Error(`${path}: ${field} ${rule}`);
  };
  const count = (value: unknown) => Number.isInteger(value) && (value as number) > 0;
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(String(spec.name))) bad('name', 'must be 1 to 32 lowercase letters, digits or "-"');
  if (typeof spec.guest?.kernel !== 'string' || typeof spec.guest.initrd !== 'string') bad('guest', 'needs kernel and initrd paths');
  if (!Array.isArray(spec.guest.kernelParams)) bad('guest.kernelParams', 'must be a list');
  for (const field of ['vcpus', 'memoryMiB', 'maxVcpus', 'maxMemoryMiB'] as const) {
    if (!count(spec.resources?.[field])) bad(`resources.${field}`, 'must be a positive integer');
  }
  const cidr = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;
  if (!cidr.test(String(spec.network?.guestAddress)) || !cidr.test(String(spec.network.hostAddress))) {
    bad('network', 'needs guestAddress and hostAddress as IPv4 CIDRs (10.88.0.2/24)');
  }
  if (typeof spec.rootfs?.image !== 'string') bad('rootfs.image', 'must be a path');
  if (!Array.isArray(spec.volumes)) bad('volumes', 'must be a list');
  spec.volumes.forEach((volume, i) => {
    if (!/^[a-z0-9][a-z0-9-]{0,19}$/.test(String(volume.name)) || volume.name === 'rootfs') bad(`volumes[${i}].name`, 'must be 1 to 20 lowercase letters, digits or "-", not "rootfs"');
    if (!count(volume.sizeMiB)) bad(`volumes[${i}].sizeMiB`, 'must be a positive integer');
  });
  if (typeof spec.command !== 'string' || spec.command.includes('\n')) bad('command', 'must be one line of shell');
  if (spec.metrics !== undefined) {
    if (typeof spec.metrics.host !== 'string' || spec.metrics.host === '') bad('metrics.host', 'must be an address to listen on (127.0.0.1)');
    if (!Number.isInteger(spec.metrics.port) || spec.metrics.port < 0 || spec.metrics.port > 65535) bad('metrics.port', 'must be a port number (0: any free one)');
  }
  return spec;
}
