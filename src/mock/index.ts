// The in-memory backend: a MockHypervisor that behaves like the QEMU one, with injectable failures.
export { MockHypervisor, type MockExitOptions, type MockHypervisorOptions, type MockLatencies } from './mock-hypervisor.ts';
export type { MockGuestView } from './machine.ts';
export type { MockGuestIo } from './stats.ts';
export { MockFaults, type MockHotplugFailure, type MockOperation, type MockRemovalTimeout, type MockStartFailure } from './faults.ts';
export type { MockHostProbe } from './host.ts';
export { corruptMockTemplate, deleteMockTemplate } from './templates.ts';
