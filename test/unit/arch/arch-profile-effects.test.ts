// Each field of the architecture profiles, by its effect: on the command line (qemu/arch/profiles.ts),
// on capabilities(), on resizeVCPUs in both backends, and on the removal timeout default. The
// golden files (test/unit/argv/golden/arm64-*.txt) show whole command lines.
import { describe, expect, it } from 'vitest';
import { archProfile, deviceRemovalTimeoutMs } from '../../../src/hypervisor/arch-profiles.ts';
import { capabilitiesOf } from '../../../src/hypervisor/capabilities.ts';
import { parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { UnsupportedOperationError } from '../../../src/hypervisor/errors.ts';
import { MockHypervisor } from '../../../src/mock/index.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import { QemuHypervisor } from '../../../src/qemu/qemu-hypervisor.ts';
import { resizeVcpus } from '../../../src/qemu/hotplug/cpus.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { useHotplugHarness } from '../../helpers/hotplug-harness.ts';
import { deviceOptions, structureArgv } from '../../helpers/qemu-options.ts';

const boot = { kernel: '/boot/vmlinuz' };
type Machine = SandboxConfigInput['machine'];
const arm = (machine: Machine = {}): Machine => ({ arch: 'aarch64', accel: 'tcg', ...machine });

function args(input: Partial<SandboxConfigInput> & { machine?: Machine }): string[] {
  return buildQemuArgv(parseSandboxConfig({ boot, ...input, machine: { accel: 'tcg', ...input.machine } }), runtimePaths('/run/vm')).args;
}

/** The argument of each occurrence of `flag`, as QEMU gets it. */
function values(argv: string[], flag: string): string[] {
  return argv.flatMap((arg, i) => (arg === flag ? [argv[i + 1] ?? ''] : []));
}

describe('the command line each profile makes', () => {
  it('machine: q35 with nothing more; virt with GICv3 under tcg and the host GIC under kvm', () => {
    expect(values(args({}), '-machine')).toEqual(['q35']);
    expect(values(args({ machine: { accel: 'kvm' } }), '-machine')).toEqual(['q35']);
    expect(values(args({ machine: arm() }), '-machine')).toEqual(['virt,gic-version=3']);
    expect(values(args({ machine: arm({ accel: 'kvm' }) }), '-machine')).toEqual(['virt,gic-version=host']);
    // The boot memory backend still follows the machine's own properties.
    expect(values(args({ machine: arm(), memory: { bootMiB: 256, backing: { type: 'shared' } } }), '-machine')).toEqual(['virt,gic-version=3,memory-backend=mem-ram']);
  });

  it('cpu: the cheap pointer authentication for aarch64 max under tcg only', () => {
    expect(values(args({ machine: arm() }), '-cpu')).toEqual(['max,pauth-impdef=on']);
    expect(values(args({ machine: arm({ cpuModel: 'max' }) }), '-cpu')).toEqual(['max,pauth-impdef=on']);
    expect(values(args({ machine: arm({ cpuModel: 'cortex-a72' }) }), '-cpu')).toEqual(['cortex-a72']);
    expect(values(args({ machine: arm({ accel: 'kvm' }) }), '-cpu')).toEqual(['host']);
    expect(values(args({ machine: arm({ accel: 'kvm', cpuModel: 'max' }) }), '-cpu')).toEqual(['max']);
    expect(values(args({}), '-cpu')).toEqual(['max']);
    expect(values(args({ machine: { accel: 'kvm' } }), '-cpu')).toEqual(['host']);
  });

  it('rtc: driftfix=slew on x86_64 only', () => {
    expect(values(args({}), '-rtc')).toEqual(['base=utc,driftfix=slew']);
    expect(values(args({ machine: arm() }), '-rtc')).toEqual(['base=utc']);
  });

  it('kvm: the kvm-pit tick policy is x86_64 under kvm only', () => {
    expect(values(args({ machine: { accel: 'kvm' } }), '-global')).toEqual(['kvm-pit.lost_tick_policy=discard']);
    expect(values(args({}), '-global')).toEqual([]);
    expect(values(args({ machine: arm({ accel: 'kvm' }) }), '-global')).toEqual([]);
  });

  it('console: an isa-serial device on x86_64, the board\'s PL011 through -serial on aarch64, on a socket or a log file or not at all', () => {
    const serialDevices = (argv: string[]) => deviceOptions(argv).filter((d) => d.get('driver') === 'isa-serial').map((d) => d.get('chardev'));
    for (const console of [{ socket: true }, { socket: false, logFile: '/var/log/c.log' }]) {
      expect(serialDevices(args({ console }))).toEqual(['svmm-console']);
      expect(values(args({ console }), '-serial')).toEqual([]);
      expect(values(args({ machine: arm(), console }), '-serial')).toEqual(['chardev:svmm-console']);
      expect(serialDevices(args({ machine: arm(), console }))).toEqual([]);
      // The chardev it names is there.
      expect(structureArgv(args({ machine: arm(), console })).some((o) => o.flag === '-chardev' && o.props?.get('id') === 'svmm-console')).toBe(true);
    }
    expect(values(args({ machine: arm(), console: { socket: false } }), '-serial')).toEqual([]);
    expect(serialDevices(args({ console: { socket: false } }))).toEqual([]);
  });

  it('everything else is the same on both: seccomp, -nodefaults, root ports on pcie.0, virtio-mem, the root image parameters', () => {
    const input = { id: 'same', memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' as const }, boot: { ...boot, image: '/r.img' } };
    // Without the options the profiles make (and the -device options, compared next).
    const profiled = ['-machine', '-cpu', '-rtc', '-serial', '-device'];
    const strip = (argv: string[]) => argv.filter((arg, i) => !profiled.includes(arg) && !profiled.includes(argv[i - 1] ?? ''));
    const x86 = args(input);
    const aarch64 = args({ ...input, machine: arm() });
    expect(strip(aarch64)).toEqual(strip(x86));
    expect(deviceOptions(aarch64).filter((d) => d.get('driver') !== 'isa-serial')).toEqual(deviceOptions(x86).filter((d) => d.get('driver') !== 'isa-serial'));
  });
});

describe('capabilities and hotplug per profile', () => {
  const x86 = parseSandboxConfig({ boot, machine: { accel: 'kvm' }, cpus: { boot: 1, max: 2 } });
  const aarch64 = parseSandboxConfig({ boot, machine: arm({ accel: 'kvm' }), memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' } });

  it('capabilities(): no vCPU hotplug (nor unplug) and no DIMMs on virt; both on q35', () => {
    expect(capabilitiesOf(x86)).toMatchObject({ cpuHotplug: true, cpuHotUnplug: true, dimmHotplug: true });
    expect(capabilitiesOf(aarch64)).toMatchObject({ cpuHotplug: false, cpuHotUnplug: false, dimmHotplug: false, memoryHotplug: true, memoryHotUnplug: true });
    expect(capabilitiesOf(undefined)).toEqual(capabilitiesOf(parseSandboxConfig({ boot, machine: { accel: 'kvm' } })));
  });

  it('the QEMU backend and the mock report them the same', async () => {
    const mock = new MockHypervisor({ host: false });
    await mock.createVM({ ...aarch64, id: 'arm-caps' });
    expect(mock.capabilities()).toEqual(capabilitiesOf(aarch64));
    await mock.stopVM();
  });

  it('the removal timeout default is the machine\'s (q35 10 s, virt 20 s); a configured one wins on both', () => {
    expect(deviceRemovalTimeoutMs(undefined, x86)).toBe(10_000);
    expect(deviceRemovalTimeoutMs(undefined, aarch64)).toBe(20_000);
    expect(deviceRemovalTimeoutMs(500, aarch64)).toBe(500);
    expect(deviceRemovalTimeoutMs(0, x86)).toBe(0);
    expect(archProfile('aarch64').deviceRemovalTimeoutMs).toBeGreaterThan(3 * 6_200);
  });

  it('capabilities().deviceRemovalTimeoutMs is that timeout, in both backends', async () => {
    expect(capabilitiesOf(x86).deviceRemovalTimeoutMs).toBe(10_000);
    expect(capabilitiesOf(aarch64).deviceRemovalTimeoutMs).toBe(20_000);
    expect(capabilitiesOf(aarch64, undefined, 0, 1_500).deviceRemovalTimeoutMs).toBe(1_500);
    // Before createVM: the default machine's, or the option.
    expect(new QemuHypervisor().capabilities().deviceRemovalTimeoutMs).toBe(10_000);
    expect(new QemuHypervisor({ deviceRemovalTimeoutMs: 1_500 }).capabilities().deviceRemovalTimeoutMs).toBe(1_500);
    for (const [options, expected] of [[{}, 20_000], [{ deviceRemovalTimeoutMs: 700 }, 700]] as const) {
      const mock = new MockHypervisor({ host: false, ...options });
      await mock.createVM({ ...aarch64, id: 'arm-removal' });
      expect(mock.capabilities().deviceRemovalTimeoutMs).toBe(expected);
      await mock.stopVM();
    }
  });

  it('the mock refuses resizeVCPUs on aarch64 with UNSUPPORTED, as QEMU does, and keeps its vCPUs', async () => {
    const vm = new MockHypervisor({ host: false });
    await vm.createVM({ boot, machine: arm(), cpus: { boot: 2 } });
    await vm.startVM();
    try {
      const error = await vm.resizeVCPUs(3).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UnsupportedOperationError);
      expect(error).toMatchObject({ code: 'UNSUPPORTED', operation: 'resizeVCPUs' });
      await expect(vm.resizeVCPUs(1)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
      expect(await vm.resizeVCPUs(2)).toEqual({ previous: 2, current: 2 });
      expect(vm.guest?.onlineCpus).toBe(2);
    } finally {
      await vm.stopVM();
    }
  });
});

describe('the QEMU backend on virt', () => {
  const h = useHotplugHarness();

  it('resizeVCPUs is UNSUPPORTED before any QMP command; the boot count is a no-op', async () => {
    const ctx = h.context({ machine: arm(), cpus: { boot: 2 } });
    const error = await resizeVcpus(ctx, 3).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsupportedOperationError);
    expect((error as Error).message).toMatch(/virt machine cannot hot-plug vCPUs/);
    await expect(resizeVcpus(ctx, 1)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 2, current: 2 });
    expect(h.sent()).toEqual([]);
  });

  it('on q35 the same request goes to QEMU', async () => {
    const ctx = h.context({ cpus: { boot: 1, max: 2 } });
    h.server.handle('query-hotpluggable-cpus', () => [{ type: 'qemu64-x86_64-cpu', 'vcpus-count': 1, props: { 'socket-id': 0, 'core-id': 1, 'thread-id': 0 } }]);
    h.server.handle('device_add', () => ({}));
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 1, current: 2 });
    expect(h.sent().map(([name]) => name)).toEqual(['query-hotpluggable-cpus', 'device_add']);
  });
});
