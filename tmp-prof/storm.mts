import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { QemuHypervisor } from '../src/qemu/qemu-hypervisor.ts';
import { guestAssets } from '../test/guest/index.ts';
const QEMU = process.env['SANDBOX_VMM_QEMU'] ?? '/usr/bin/qemu-system-x86_64';
const N = 50;
function config(id: string) {
  const guest = guestAssets();
  return { id, machine: { accel: 'tcg' as const }, boot: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams }, memory: { bootMiB: 256 }, hotplug: { rootPorts: 2 }, devices: [{ type: 'channel' as const, id: 'agent', name: 'agent.0' }, { type: 'rng' as const, id: 'rng0' }], runtime: { qemuPath: QEMU } };
}
let n = 0;
const base = mkdtempSync('/dev/shm/svmm-prof-'); chmodSync(base, 0o755);
const dir = join(base, 't');
const maker = new QemuHypervisor();
await maker.createVM(config(`prof-t-${process.pid}`), { templateDir: dir });
await maker.startVM({ waitForChannel: 'agent' });
await maker.saveTemplate();
for (let round = 0; round < 2; round++) {
  const delay = monitorEventLoopDelay({ resolution: 5 }); delay.enable(); await new Promise((r) => setTimeout(r, 20));
  const blocks: number[] = []; let last = performance.now();
  const iv = setInterval(() => { const now = performance.now(); if (now - last > 30) blocks.push(Math.round(now - last)); last = now; }, 5);
  const vms = Array.from({ length: N }, () => new QemuHypervisor());
  const t0 = performance.now();
  await Promise.all(vms.map(async (vm) => { await vm.createVM(config(`prof-${process.pid}-${++n}`), { fromTemplate: dir }); await vm.startVM({ paused: true, timeoutMs: 300_000 }); }));
  const ms = performance.now() - t0; clearInterval(iv); delay.disable();
  console.log(`round ${round}: ${ms.toFixed(0)} ms, p99 ${(delay.percentile(99) / 1e6).toFixed(0)} ms, max ${(delay.max / 1e6).toFixed(0)} ms, blocks>30ms: ${blocks.join(',')}`);
  await Promise.all(vms.map((vm) => vm.stopVM()));
}
rmSync(base, { recursive: true, force: true });
