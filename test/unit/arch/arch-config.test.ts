// machine.arch in the config: each architecture's defaults, and what its profile cannot do refused
// with a ConfigError naming the field (several at once).
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig } from '../../../src/hypervisor/config/index.ts';
import { configError } from '../config/config-error.ts';

const boot = { kernel: '/boot/vmlinuz' };
const arm = { arch: 'aarch64' } as const;

describe('machine.arch defaults', () => {
  it('is x86_64 on q35 with qemu-system-x86_64 when left out', () => {
    const config = parseSandboxConfig({ boot });
    expect([config.machine.arch, config.machine.type, config.runtime.qemuPath]).toEqual(['x86_64', 'q35', 'qemu-system-x86_64']);
  });

  it('aarch64 is virt with qemu-system-aarch64; the CPU model follows the accelerator as on x86_64', () => {
    const config = parseSandboxConfig({ boot, machine: arm });
    expect([config.machine.arch, config.machine.type, config.runtime.qemuPath, config.machine.cpuModel]).toEqual(['aarch64', 'virt', 'qemu-system-aarch64', 'host']);
    expect(parseSandboxConfig({ boot, machine: { ...arm, accel: 'tcg' } }).machine.cpuModel).toBe('max');
  });

  it('keeps a qemuPath and a machine type that are given', () => {
    const config = parseSandboxConfig({ boot, machine: { ...arm, type: 'virt' }, runtime: { qemuPath: '/opt/qemu/bin/qemu-system-aarch64' } });
    expect([config.machine.type, config.runtime.qemuPath]).toEqual(['virt', '/opt/qemu/bin/qemu-system-aarch64']);
  });

  it('accepts what aarch64 can do: virtio-mem, cpus.max equal to cpus.boot, its own console', () => {
    const config = parseSandboxConfig({
      boot: { ...boot, kernelParams: ['console=ttyAMA0'] },
      machine: arm,
      cpus: { boot: 2, max: 2 },
      memory: { bootMiB: 256, maxMiB: 1024, hotplug: 'virtio-mem' },
    });
    expect([config.cpus, config.memory.hotplug]).toEqual([{ boot: 2, max: 2 }, 'virtio-mem']);
  });

  it('a parsed aarch64 config parses again to itself (attach re-reads the saved one)', () => {
    const config = parseSandboxConfig({ boot, machine: arm, cpus: { boot: 2 } });
    expect(parseSandboxConfig(config)).toEqual(config);
  });
});

describe('what a profile cannot do is refused by path', () => {
  const cases: { name: string; input: unknown; paths: string[]; message: RegExp }[] = [
    { name: 'an unknown architecture', input: { boot, machine: { arch: 'riscv64' } }, paths: ['machine.arch'], message: /x86_64|aarch64/ },
    { name: 'q35 on aarch64', input: { boot, machine: { ...arm, type: 'q35' } }, paths: ['machine.type'], message: /must be "virt" for machine.arch "aarch64"/ },
    { name: 'virt on x86_64', input: { boot, machine: { type: 'virt' } }, paths: ['machine.type'], message: /must be "q35" for machine.arch "x86_64"/ },
    { name: 'DIMM hotplug on aarch64', input: { boot, machine: arm, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } }, paths: ['memory.hotplug'], message: /"dimm" is not available on machine.arch "aarch64".*ACPI/ },
    { name: 'more possible than boot vCPUs on aarch64', input: { boot, machine: arm, cpus: { boot: 1, max: 2 } }, paths: ['cpus.max'], message: /must equal cpus.boot on machine.arch "aarch64".*cannot hot-plug vCPUs/ },
    { name: 'tcgVcpuUnplug on aarch64', input: { boot, machine: arm, hotplug: { tcgVcpuUnplug: true } }, paths: ['hotplug.tcgVcpuUnplug'], message: /does not apply on machine.arch "aarch64"/ },
    { name: 'the x86 serial console on aarch64', input: { boot: { ...boot, kernelParams: ['quiet', 'console=ttyS0,115200'] }, machine: arm }, paths: ['boot.kernelParams[1]'], message: /names ttyS0.*ttyAMA0/ },
    { name: 'the PL011 console on x86_64', input: { boot: { ...boot, kernelParams: ['console=ttyAMA0'] } }, paths: ['boot.kernelParams[0]'], message: /names ttyAMA0.*ttyS0/ },
    {
      name: 'everything aarch64 lacks at once',
      input: { boot: { ...boot, kernelParams: ['console=ttyS0'] }, machine: arm, cpus: { boot: 1, max: 4 }, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' }, hotplug: { tcgVcpuUnplug: true } },
      paths: ['cpus.max', 'hotplug.tcgVcpuUnplug', 'memory.hotplug', 'boot.kernelParams[0]'],
      message: /cpus.max.*tcgVcpuUnplug.*memory.hotplug.*kernelParams/,
    },
  ];
  it.each(cases)('$name', ({ input, paths, message }) => {
    const error = configError(() => parseSandboxConfig(input));
    expect(error.paths).toEqual(paths);
    expect(error.message).toMatch(message);
  });

  it('x86_64 keeps everything aarch64 refuses', () => {
    const config = parseSandboxConfig({
      boot: { ...boot, kernelParams: ['console=ttyS0'] },
      cpus: { boot: 1, max: 4 },
      memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' },
      hotplug: { tcgVcpuUnplug: true },
    });
    expect([config.cpus.max, config.memory.hotplug, config.hotplug.tcgVcpuUnplug]).toEqual([4, 'dimm', true]);
  });

  it('console= of a device that is no serial port, or with no value, is the caller\'s business on both', () => {
    for (const machine of [{}, arm]) {
      expect(parseSandboxConfig({ boot: { ...boot, kernelParams: ['console=hvc0', 'console=', 'console=tty0'] }, machine }).boot.kernelParams).toHaveLength(3);
    }
  });
});
