// The VM state file attach() acts on: every field validated when read back, the config re-parsed
// and tied to the state's id, and nothing but a bounded regular file read.
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, parseSandboxConfig, validateHotplugDevice } from '../../../src/hypervisor/config/index.ts';
import { readStateFile, serializeState, STATE_FILE_VERSION, writeStateFile, type SavedVmState } from '../../../src/qemu/state-file.ts';
import { UnsafePathError } from '../../../src/util/safe-fs.ts';

const MiB = 1024 * 1024;
const PREFIX = `not a sandbox-vmm state file of version ${STATE_FILE_VERSION}: `;

let dir: string;
let file: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'svmm-state-file-'));
  file = join(dir, 'state.json');
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function sampleState(): SavedVmState {
  return {
    version: STATE_FILE_VERSION,
    id: 'vm-1',
    pid: 1234,
    startTime: 98765,
    qemuPath: '/usr/bin/qemu-system-x86_64',
    qemuVersion: { major: 10, minor: 0, micro: 2 },
    detached: true,
    identity: { uid: 1_900_000_003, gid: 1_900_000_003, groups: [993] },
    leased: true,
    config: parseSandboxConfig({
      id: 'vm-1',
      boot: { kernel: '/boot/vmlinuz' },
      memory: { backing: { type: 'shared' } },
      devices: [{ type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'share', sharedDir: '/srv/share' }],
    }),
    paused: false,
    hotplug: {
      devices: [
        { id: 'disk1', device: validateHotplugDevice({ type: 'block', id: 'disk1', path: '/images/disk1.img' }), bus: 'rp0', backends: [{ kind: 'blockdev', nodeName: 'blk-disk1' }] },
        {
          id: 'net1',
          device: validateHotplugDevice({ type: 'net', id: 'net1', tap: { fd: 42 }, mac: '52:54:00:AB:CD:EF' }),
          bus: 'rp1',
          backends: [{ kind: 'netdev', id: 'netdev-net1' }],
        },
      ],
      infrastructure: [{ id: 'scsi0', bus: 'rp2' }],
      cpus: [{ qemuId: 'vcpu1', coreId: 1 }],
      virtioMemMiB: 256,
      dimms: [{ qemuId: 'dimm0', backendId: 'mem-dimm0', sizeMiB: 128 }],
      vcpuRemoved: false,
      vcpuAdds: 1,
    },
    helpers: [{ name: 'virtiofsd', deviceId: 'fs0', pid: 4321, startTime: 55, binary: '/usr/lib/qemu/virtiofsd' }],
  };
}

type Raw = Record<string, unknown>;

/** The sample as plain JSON, changed by `change`, written to the state file. */
function writeRaw(change: (raw: Raw) => void = () => {}): void {
  const raw = JSON.parse(serializeState(sampleState())) as Raw;
  change(raw);
  writeFileSync(file, JSON.stringify(raw));
}

async function readError(): Promise<Error> {
  const error = await readStateFile(file).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(Error);
  return error as Error;
}

const at = (raw: Raw, key: string): Raw => raw[key] as Raw;
const hotplug = (raw: Raw): Raw => at(raw, 'hotplug');
const first = (value: unknown): Raw => (value as Raw[])[0] as Raw;

describe('serializeState / writeStateFile / readStateFile', () => {
  it('round-trips a full state', async () => {
    const state = sampleState();
    await writeStateFile(file, serializeState(state));
    expect(await readStateFile(file)).toEqual(state);
  });

  it('serializes as plain JSON of the state', () => {
    const state = sampleState();
    expect(serializeState(state)).toBe(JSON.stringify(state));
  });

  it('writes through a temporary name (nothing else left, 0600) and replaces an existing file', async () => {
    writeFileSync(file, 'old');
    const text = serializeState(sampleState());
    await writeStateFile(file, text);
    expect(readFileSync(file, 'utf8')).toBe(text);
    expect(readdirSync(dir)).toEqual(['state.json']);
    expect(lstatSync(file).mode & 0o777).toBe(0o600);
  });

  it('replaces a symlink planted at the name instead of writing through it', async () => {
    const target = join(dir, 'target');
    writeFileSync(target, 'canary');
    symlinkSync(target, file);
    await writeStateFile(file, serializeState(sampleState()));
    expect(readFileSync(target, 'utf8')).toBe('canary');
    expect(lstatSync(file).isFile()).toBe(true);
    expect((await readStateFile(file)).id).toBe('vm-1');
  });

  it('returns the config as parseSandboxConfig makes it, defaults filled', async () => {
    writeRaw((raw) => {
      raw['config'] = { id: 'vm-1', boot: { kernel: '/boot/vmlinuz' } };
    });
    const state = await readStateFile(file);
    expect(state.config).toEqual(parseSandboxConfig({ id: 'vm-1', boot: { kernel: '/boot/vmlinuz' } }));
    expect(state.config.machine.accel).toBe('kvm');
    expect(state.config.hardening.user).toBe('auto');
  });

  it.each<[string, (raw: Raw) => void]>([
    ['pid 2 (the lowest)', (raw) => (raw['pid'] = 2)],
    ['pid 2^22 (the highest)', (raw) => (raw['pid'] = 2 ** 22)],
    ['startTime 0', (raw) => (raw['startTime'] = 0)],
    ['no identity (null)', (raw) => (raw['identity'] = null)],
    ['uid and gid 4294967294', (raw) => (raw['identity'] = { uid: 0xfffffffe, gid: 0xfffffffe, groups: [0xfffffffe] })],
    ['uid and gid 0', (raw) => (raw['identity'] = { uid: 0, gid: 0, groups: [0] })],
    ['64 groups', (raw) => (raw['identity'] = { uid: 5, gid: 5, groups: Array.from({ length: 64 }, (_, i) => i) })],
    ['no helpers', (raw) => (raw['helpers'] = [])],
    ['a helper with startTime 0', (raw) => (first(raw['helpers'])['startTime'] = 0)],
    ['an empty hotplug state', (raw) => (raw['hotplug'] = { devices: [], infrastructure: [], cpus: [], virtioMemMiB: 0, dimms: [], vcpuRemoved: true, vcpuAdds: 0 })],
    ['an unknown QEMU version (null)', (raw) => (raw['qemuVersion'] = null)],
    ['coreId 0', (raw) => (first(hotplug(raw)['cpus'])['coreId'] = 0)],
    ['a device whose removal was asked for', (raw) => (first(hotplug(raw)['devices'])['removalRequested'] = true)],
    ['a 64-character id', (raw) => {
      const id = `a${'b'.repeat(63)}`;
      raw['id'] = id;
      at(raw, 'config')['id'] = id;
    }],
  ])('accepts %s', async (_name, change) => {
    writeRaw(change);
    await expect(readStateFile(file)).resolves.toMatchObject({ version: STATE_FILE_VERSION });
  });

  it.each<[string, (raw: Raw) => void, string]>([
    ['version 1', (raw) => (raw['version'] = 1), 'version'],
    ['a newer version', (raw) => (raw['version'] = STATE_FILE_VERSION + 1), 'version'],
    ['no qemuVersion', (raw) => delete raw['qemuVersion'], 'qemuVersion'],
    ['a qemuVersion without micro', (raw) => (raw['qemuVersion'] = { major: 10, minor: 0 }), 'qemuVersion.micro'],
    ['a qemuVersion given as a string', (raw) => (raw['qemuVersion'] = '10.0.2'), 'qemuVersion'],
    ['no vcpuAdds', (raw) => delete hotplug(raw)['vcpuAdds'], 'hotplug.vcpuAdds'],
    ['a negative vcpuAdds', (raw) => (hotplug(raw)['vcpuAdds'] = -1), 'hotplug.vcpuAdds'],
    ['no id', (raw) => delete raw['id'], 'id'],
    ['an id starting with a dot', (raw) => (raw['id'] = '.vm'), 'id'],
    ['a 65-character id', (raw) => (raw['id'] = 'a'.repeat(65)), 'id'],
    ['an id with a slash', (raw) => (raw['id'] = 'a/b'), 'id'],
    ['no pid', (raw) => delete raw['pid'], 'pid'],
    ['pid 1', (raw) => (raw['pid'] = 1), 'pid'],
    ['pid 0', (raw) => (raw['pid'] = 0), 'pid'],
    ['pid above 2^22', (raw) => (raw['pid'] = 2 ** 22 + 1), 'pid'],
    ['a fractional pid', (raw) => (raw['pid'] = 1234.5), 'pid'],
    ['a pid as a string', (raw) => (raw['pid'] = '1234'), 'pid'],
    ['no startTime', (raw) => delete raw['startTime'], 'startTime'],
    ['a negative startTime', (raw) => (raw['startTime'] = -1), 'startTime'],
    ['a fractional startTime', (raw) => (raw['startTime'] = 1.5), 'startTime'],
    ['no qemuPath', (raw) => delete raw['qemuPath'], 'qemuPath'],
    ['a relative qemuPath', (raw) => (raw['qemuPath'] = 'bin/qemu-system-x86_64'), 'qemuPath'],
    ['a bare qemuPath', (raw) => (raw['qemuPath'] = 'qemu-system-x86_64'), 'qemuPath'],
    ['no detached', (raw) => delete raw['detached'], 'detached'],
    ['no identity key', (raw) => delete raw['identity'], 'identity'],
    ['uid -1', (raw) => (at(raw, 'identity')['uid'] = -1), 'identity.uid'],
    ['uid 4294967295', (raw) => (at(raw, 'identity')['uid'] = 0xffffffff), 'identity.uid'],
    ['gid -1', (raw) => (at(raw, 'identity')['gid'] = -1), 'identity.gid'],
    ['gid 4294967295', (raw) => (at(raw, 'identity')['gid'] = 0xffffffff), 'identity.gid'],
    ['a fractional uid', (raw) => (at(raw, 'identity')['uid'] = 1.5), 'identity.uid'],
    ['a group 4294967295', (raw) => (at(raw, 'identity')['groups'] = [1, 0xffffffff]), 'identity.groups.1'],
    ['65 groups', (raw) => (at(raw, 'identity')['groups'] = Array.from({ length: 65 }, (_, i) => i)), 'identity.groups'],
    ['an identity without groups', (raw) => delete at(raw, 'identity')['groups'], 'identity.groups'],
    ['an identity with an extra key', (raw) => (at(raw, 'identity')['euid'] = 0), 'identity'],
    ['no leased', (raw) => delete raw['leased'], 'leased'],
    ['no paused', (raw) => delete raw['paused'], 'paused'],
    ['a string for paused', (raw) => (raw['paused'] = 'no'), 'paused'],
    ['no hotplug', (raw) => delete raw['hotplug'], 'hotplug'],
    ['a hotplugged device with a bad id', (raw) => (first(hotplug(raw)['devices'])['id'] = '-x'), 'hotplug.devices.0.id'],
    ['a hotplugged device that is not hot-pluggable', (raw) => (first(hotplug(raw)['devices'])['device'] = { type: 'rng', id: 'rng0' }), 'hotplug.devices.0.device.type'],
    ['a bus with a space', (raw) => (first(hotplug(raw)['devices'])['bus'] = 'rp 0'), 'hotplug.devices.0.bus'],
    ['an unknown backend kind', (raw) => (first(hotplug(raw)['devices'])['backends'] = [{ kind: 'qcow', id: 'x' }]), 'hotplug.devices.0.backends.0.kind'],
    ['a blockdev backend without nodeName', (raw) => (first(hotplug(raw)['devices'])['backends'] = [{ kind: 'blockdev', id: 'x' }]), 'hotplug.devices.0.backends.0.nodeName'],
    ['a removalRequested that is not a boolean', (raw) => (first(hotplug(raw)['devices'])['removalRequested'] = 'yes'), 'hotplug.devices.0.removalRequested'],
    ['infrastructure without bus', (raw) => (hotplug(raw)['infrastructure'] = [{ id: 'scsi0' }]), 'hotplug.infrastructure.0.bus'],
    ['a negative coreId', (raw) => (first(hotplug(raw)['cpus'])['coreId'] = -1), 'hotplug.cpus.0.coreId'],
    ['a negative virtioMemMiB', (raw) => (hotplug(raw)['virtioMemMiB'] = -2), 'hotplug.virtioMemMiB'],
    ['a 0 MiB DIMM', (raw) => (first(hotplug(raw)['dimms'])['sizeMiB'] = 0), 'hotplug.dimms.0.sizeMiB'],
    ['no vcpuRemoved', (raw) => delete hotplug(raw)['vcpuRemoved'], 'hotplug.vcpuRemoved'],
    ['an extra hotplug key', (raw) => (hotplug(raw)['slots'] = []), 'hotplug'],
    ['no helpers', (raw) => delete raw['helpers'], 'helpers'],
    ['a helper other than virtiofsd', (raw) => (first(raw['helpers'])['name'] = 'sh'), 'helpers.0.name'],
    ['a helper with a relative binary', (raw) => (first(raw['helpers'])['binary'] = 'virtiofsd'), 'helpers.0.binary'],
    ['a helper with pid 1', (raw) => (first(raw['helpers'])['pid'] = 1), 'helpers.0.pid'],
    ['a helper with a bad device id', (raw) => (first(raw['helpers'])['deviceId'] = '../x'), 'helpers.0.deviceId'],
    ['a helper with a negative startTime', (raw) => (first(raw['helpers'])['startTime'] = -1), 'helpers.0.startTime'],
    ['an unknown top-level key', (raw) => (raw['argv'] = ['-x']), ''],
  ])('refuses %s, naming the field', async (_name, change, path) => {
    writeRaw(change);
    const error = await readError();
    expect(error.message.startsWith(`${PREFIX}${path} `)).toBe(true);
    expect(error).not.toBeInstanceOf(ConfigError);
  });

  it('reads a version 2 file (an older library): the QEMU version unknown, each hot-added vCPU one add', async () => {
    writeRaw((raw) => {
      raw['version'] = 2;
      delete raw['qemuVersion'];
      delete hotplug(raw)['vcpuAdds'];
    });
    const state = await readStateFile(file);
    expect(state.version).toBe(STATE_FILE_VERSION);
    expect(state.qemuVersion).toBeNull();
    expect(state.hotplug.vcpuAdds).toBe(1);
  });

  it('keeps the saved vCPU add count and QEMU version', async () => {
    writeRaw((raw) => (hotplug(raw)['vcpuAdds'] = 7));
    const state = await readStateFile(file);
    expect(state.hotplug.vcpuAdds).toBe(7);
    expect(state.qemuVersion).toEqual({ major: 10, minor: 0, micro: 2 });
  });

  it('refuses a JSON value that is not an object', async () => {
    writeFileSync(file, '[]');
    expect((await readError()).message.startsWith(`${PREFIX} `)).toBe(true);
  });

  it('refuses a state without a config, naming the field', async () => {
    writeRaw((raw) => delete raw['config']);
    expect((await readError()).message.startsWith(`${PREFIX}config `)).toBe(true);
  });

  it('refuses a null config with a ConfigError', async () => {
    writeRaw((raw) => (raw['config'] = null));
    const error = await readError();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).paths).toEqual(['']);
  });

  it('refuses an invalid config with the ConfigError naming its field', async () => {
    writeRaw((raw) => (at(raw, 'config')['machine'] = { accel: 'xen' }));
    const error = await readError();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).paths).toEqual(['machine.accel']);
  });

  it('refuses a config of another VM', async () => {
    writeRaw((raw) => (at(raw, 'config')['id'] = 'vm-2'));
    expect((await readError()).message).toBe('the saved config is for VM vm-2, not vm-1');
  });

  it('refuses a config without an id (a fresh uuid is not the state id)', async () => {
    writeRaw((raw) => delete at(raw, 'config')['id']);
    expect((await readError()).message).toMatch(/^the saved config is for VM [0-9a-f-]{36}, not vm-1$/);
  });

  it('refuses garbage with a JSON syntax error', async () => {
    writeFileSync(file, 'garbage\n');
    expect(await readError()).toBeInstanceOf(SyntaxError);
  });

  it('reads a state file of exactly 1 MiB', async () => {
    const text = serializeState(sampleState());
    writeFileSync(file, text + ' '.repeat(MiB - Buffer.byteLength(text)));
    expect((await readStateFile(file)).id).toBe('vm-1');
  });

  it('refuses a file over 1 MiB without parsing it', async () => {
    const text = serializeState(sampleState());
    writeFileSync(file, text + ' '.repeat(MiB + 1 - Buffer.byteLength(text)));
    const error = await readError();
    expect(error).toBeInstanceOf(UnsafePathError);
    expect((error as UnsafePathError).path).toBe(file);
    expect(error.message).toBe(`unsafe path ${file}: is larger than ${MiB} bytes`);
  });

  it('refuses a symlink, even to a valid state file', async () => {
    const real = join(dir, 'real.json');
    writeFileSync(real, serializeState(sampleState()));
    symlinkSync(real, file);
    const error = await readError();
    expect(error).toBeInstanceOf(UnsafePathError);
    expect((error as UnsafePathError).path).toBe(file);
    expect(error.message).toBe(`unsafe path ${file}: is a symlink, not a regular file`);
  });

  it('refuses a FIFO at once (it is never opened for a blocking read)', async () => {
    expect(spawnSync('mkfifo', [file]).status).toBe(0);
    const error = await readError();
    expect(error).toBeInstanceOf(UnsafePathError);
    expect(error.message).toBe(`unsafe path ${file}: is a FIFO, not a regular file`);
  });

  it('refuses a directory', async () => {
    mkdirSync(file);
    const error = await readError();
    expect(error).toBeInstanceOf(UnsafePathError);
    expect(error.message).toBe(`unsafe path ${file}: is a directory, not a regular file`);
  });

  it('fails with ENOENT when there is no file', async () => {
    expect((await readError()) as NodeJS.ErrnoException).toMatchObject({ code: 'ENOENT' });
  });
});
