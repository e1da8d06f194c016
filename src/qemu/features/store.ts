// What each QEMU binary of this process offers, kept per path while the file is the same build
// (binaryKey: device, inode, size, mtime). The first VM of a binary probes on its monitor; later
// VMs only stat the binary and probe nothing, unless they use a driver or machine no VM used before.
// Concurrent first VMs wait for one probe, then probe only what it did not cover.
import type { QmpClient } from '../../qmp/index.ts';
import { binaryKey } from './binary-key.ts';
import type { FeatureNeeds } from './needs.ts';
import { probeFeatures, unprobed, type QemuFeatures } from './qemu-features.ts';

interface Entry {
  key: string;
  features: QemuFeatures | undefined;
  probing: Promise<QemuFeatures> | undefined;
}

export class QemuFeatureStore {
  readonly #entries = new Map<string, Entry>();
  /** How many probes ran (each one or more QMP commands): what the tests and the benchmark count. */
  probes = 0;

  /** What is known of the current build of `binary`, without probing (one stat). */
  known(binary: string): QemuFeatures | undefined {
    const entry = this.#entries.get(binary);
    return entry && entry.key === binaryKey(binary) ? entry.features : undefined;
  }

  /**
   * Everything `needs` asks about, for the build of `binary` whose QEMU answers on `qmp` (which must
   * not have run guest code: what it says is kept for other VMs).
   */
  async learn(binary: string, qmp: QmpClient, needs: FeatureNeeds, signal?: AbortSignal): Promise<QemuFeatures> {
    const key = binaryKey(binary);
    const pending = this.#current(binary, key)?.probing;
    if (pending) await pending.catch(() => undefined);
    const entry = this.#current(binary, key) ?? { key, features: undefined, probing: undefined };
    const known = entry.features;
    const missing = unprobed(known, needs);
    if (known && !missing.machine && missing.drivers.length === 0) return known;
    this.probes += 1;
    const probing = probeFeatures(qmp, needs, known, signal ? { signal } : {});
    entry.probing = probing;
    this.#entries.set(binary, entry);
    try {
      const features = await probing;
      // Another probe may have finished meanwhile: keep the union of what both learned.
      entry.features = entry.features && entry.features !== known ? merge(entry.features, features) : features;
      return features;
    } finally {
      if (entry.probing === probing) entry.probing = undefined;
    }
  }

  clear(): void {
    this.#entries.clear();
    this.probes = 0;
  }

  #current(binary: string, key: string): Entry | undefined {
    const entry = this.#entries.get(binary);
    return entry?.key === key ? entry : undefined;
  }
}

function merge(a: QemuFeatures, b: QemuFeatures): QemuFeatures {
  return { ...a, devices: new Map([...a.devices, ...b.devices]), machines: new Map([...a.machines, ...b.machines]) };
}

/** The store every QemuHypervisor of this process shares. */
export const qemuFeatures = new QemuFeatureStore();
