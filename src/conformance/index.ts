/**
 * The conformance suite every backend of the `Hypervisor` interface must pass.
 * @module sandbox-vmm/conformance
 */
// The conformance suite every backend of the Hypervisor interface must pass, shipped with the
// package as 'sandbox-vmm/conformance'. It registers its tests through the framework functions it
// is given and asserts with node:assert, so it runs under vitest, jest, mocha or node:test.
import type { Hypervisor } from '../hypervisor/types.ts';
import { defineDimmTests } from './dimm.ts';
import { defineFailureTests } from './failures.ts';
import { defineFsHotplugTests } from './fs-hotplug.ts';
import { Harness } from './harness.ts';
import { defineHotplugTests } from './hotplug.ts';
import { defineLifecycleTests } from './lifecycle.ts';
import { defineReadinessTests } from './readiness.ts';
import { defineStatsTests } from './stats.ts';
import { defineTemplateTests } from './templates.ts';
import { defineVcpuTests } from './vcpus.ts';
import { resolveOptions, type ConformanceOptions, type ConformanceTestApi } from './options.ts';

export type {
  ConformanceBackendSettings,
  ConformanceEvents,
  ConformanceFaults,
  ConformanceGuestProbes,
  ConformanceOptions,
  ConformanceTestApi,
  ConformanceTimeouts,
} from './options.ts';
export { qemuEvents } from './options.ts';

/**
 *   import { describe, it, beforeAll, afterAll } from 'vitest';
 *   defineConformanceSuite({ describe, it, beforeAll, afterAll }, { name: 'mine', create, config, disk });
 */
export function defineConformanceSuite<H extends Hypervisor>(api: ConformanceTestApi, options: ConformanceOptions<H>): void {
  // The suite hands the probes, faults and disk() only VMs that options.create made: H's.
  const harness = new Harness(resolveOptions(options as unknown as ConformanceOptions));
  api.describe(`${options.name} conforms to the Hypervisor interface`, () => {
    api.describe('lifecycle', () => defineLifecycleTests(api, harness));
    api.describe('failures behind the backend', () => defineFailureTests(api, harness));
    api.describe('guest readiness and events', () => defineReadinessTests(api, harness));
    api.describe('hotplug and resize (virtio-mem)', () => defineHotplugTests(api, harness));
    api.describe('virtio-fs hotplug', () => defineFsHotplugTests(api, harness));
    api.describe('DIMM memory and stuck removals', () => defineDimmTests(api, harness));
    api.describe('vCPU resize', () => defineVcpuTests(api, harness));
    api.describe('statistics', () => defineStatsTests(api, harness));
    api.describe('templates', () => defineTemplateTests(api, harness));
  });
}
