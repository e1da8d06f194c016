// Confirms from a running (paused) QEMU that each option of its command line took effect as
// written: every device where its bus and addr say and with each property it was given, every
// object, block node, chardev and netdev, the machine, CPUs, memory, kernel and process settings.
// An option this module does not know how to check is reported too, so none goes unchecked. An
// option that names an fd (fd=N) is checked against what QEMU really holds at N: the listening
// socket bound at the path the launch gave for it, or a tap.
import { existsSync, lstatSync, statSync } from 'node:fs';
import type { LaunchFd } from '../../src/qemu/launch/launcher.ts';
import type { QmpClient } from '../../src/qmp/index.ts';
import { structureArgv, type StructuredOption } from './qemu-options.ts';
import {
  blockNodes,
  boardSerialPorts,
  boundUnixSockets,
  chardevs,
  machineMemory,
  pciFunctions,
  procStatus,
  qomGet,
  socketInode,
  tapBehindFd,
  tapQueues,
  threadNames,
  type BlockNode,
  type PciFunction,
} from './qemu-state.ts';

/** QEMU's CPU type names by target: max-x86_64-cpu, max-arm-cpu. */
const CPU_TYPE_TARGET: Readonly<Record<string, string>> = { x86_64: 'x86_64', aarch64: 'arm' };

/** The RAM backend each machine makes from -m when given none. */
const DEFAULT_RAM_BACKEND: Readonly<Record<string, string>> = { q35: 'pc.ram', virt: 'mach-virt.ram' };

/** Options QEMU accepted but does not report back; accepting them is all there is to check. */
const ACCEPTED_ONLY = new Set(['-no-user-config', '-nodefaults', '-no-reboot', '-action', '-rtc', '-fsdev']);

interface Context {
  qmp: QmpClient;
  pid: number;
  /** What QEMU was given at each fd >= 3 (the argv's fds). */
  fds: readonly LaunchFd[];
  pci: PciFunction[];
  nodes: BlockNode[];
  problems: string[];
}

/** Everything that differs between the argv (with the fds it was launched with) and the QEMU started with it; empty when all matches. */
export async function argvMismatches(qmp: QmpClient, pid: number, args: readonly string[], fds: readonly LaunchFd[]): Promise<string[]> {
  const ctx: Context = { qmp, pid, fds, pci: await pciFunctions(qmp), nodes: await blockNodes(qmp), problems: [] };
  const options = structureArgv(args);
  for (const option of options) {
    try {
      await checkOption(ctx, option, options);
    } catch (error) {
      ctx.problems.push(`${option.flag} ${option.raw ?? ''}: ${(error as Error).message}`);
    }
  }
  return ctx.problems;
}

async function checkOption(ctx: Context, option: StructuredOption, all: StructuredOption[]): Promise<void> {
  const { flag, raw } = option;
  const props = option.props ?? new Map<string, string>();
  const expect = (what: string, actual: unknown, expected: unknown) => {
    if (JSON.stringify(actual) !== JSON.stringify(expected)) ctx.problems.push(`${flag} ${what}: QEMU has ${JSON.stringify(actual)}, the argv says ${JSON.stringify(expected)}`);
  };
  if (ACCEPTED_ONLY.has(flag)) return;
  switch (flag) {
    case '-name': {
      expect('guest', ((await ctx.qmp.executeUntyped('query-name')) as { name?: string }).name, props.get('guest'));
      if (props.get('debug-threads') === 'on') expect('named vCPU threads', threadNames(ctx.pid).some((n) => /^CPU \d+\/(TCG|KVM)$/.test(n)), true);
      return;
    }
    case '-uuid':
      return expect('uuid', ((await ctx.qmp.executeUntyped('query-uuid')) as { UUID: string }).UUID, raw);
    case '-machine': {
      // q35 is pc-q35-<version>, virt virt-<version>-machine.
      const machineType = String(await qomGet(ctx.qmp, '/machine', 'type'));
      expect('type', machineType.startsWith(`pc-${props.get('type')}-`) || machineType.startsWith(`${props.get('type')}-`), true);
      for (const [key, value] of props) {
        if (key !== 'type' && key !== 'memory-backend') expect(key, await qomGet(ctx.qmp, '/machine', key), value);
      }
      // Without one of ours, QEMU makes its own from -m (q35: pc.ram, virt: mach-virt.ram).
      const backend = props.get('memory-backend') ?? DEFAULT_RAM_BACKEND[props.get('type') ?? ''];
      return expect('memory-backend', await qomGet(ctx.qmp, '/machine', 'memory-backend'), `/objects/${backend}`);
    }
    case '-accel':
      return expect('kvm enabled', ((await ctx.qmp.executeUntyped('query-kvm')) as { enabled: boolean }).enabled, props.get('accel') === 'kvm');
    case '-cpu': {
      // The model, then properties: every vCPU is of the model's type and has each property.
      const [model = '', ...cpuProps] = (raw ?? '').split(',');
      const cpus = (await ctx.qmp.execute('query-cpus-fast')) as { 'qom-path': string; target: string }[];
      for (const cpu of cpus) {
        expect('vCPU type', await qomGet(ctx.qmp, cpu['qom-path'], 'type'), `${model}-${CPU_TYPE_TARGET[cpu.target] ?? cpu.target}-cpu`);
        for (const prop of cpuProps) {
          const [key = '', value = ''] = prop.split('=');
          expect(`vCPU ${key}`, await qomGet(ctx.qmp, cpu['qom-path'], key), value === 'on' ? true : value === 'off' ? false : value);
        }
      }
      return;
    }
    case '-serial': {
      // chardev:<id>: the board's own serial port (virt's PL011) is attached to that chardev.
      const chardev = /^chardev:(.+)$/.exec(raw ?? '')?.[1];
      const ports = await boardSerialPorts(ctx.qmp);
      return expect('serial ports attached', ports.map((p) => p.chardev), [chardev]);
    }
    case '-smp': {
      const smp = (await qomGet(ctx.qmp, '/machine', 'smp')) as Record<string, number>;
      for (const [key, value] of props) expect(`smp ${key}`, smp[key], Number(value));
      return;
    }
    case '-m': {
      const memory = await machineMemory(ctx.qmp);
      expect('size', memory.size, mebibytes(props.get('size')));
      expect('slots', memory.slots, Number(props.get('slots') ?? '0'));
      expect('maxmem', memory.maxSize, mebibytes(props.get('maxmem') ?? props.get('size')));
      return;
    }
    case '-object':
      return checkQomProperties(ctx, `/objects/${props.get('id')}`, props, { 'qom-type': 'type' }, ['id']);
    case '-sandbox':
      // Seccomp mode 2 is a filter; the individual deny lists cannot be read back.
      return expect('seccomp mode', procStatus(ctx.pid, 'Seccomp'), props.get('enable') === 'on' ? '2' : '0');
    case '-display':
      return expect('display', ((await ctx.qmp.executeUntyped('query-display-options')) as { type: string }).type, props.get('type'));
    case '-S':
      return expect('run state', ((await ctx.qmp.execute('query-status')) as { status: string }).status, 'prelaunch');
    case '-kernel':
    case '-initrd':
    case '-append':
      return expect('machine property', await qomGet(ctx.qmp, '/machine', flag.slice(1)), raw);
    case '-mon': {
      // This very QMP session runs on it.
      const mon = (await chardevs(ctx.qmp)).find((c) => c.label === props.get('chardev'));
      return expect('monitor chardev open', mon?.['frontend-open'], true);
    }
    case '-chardev':
      return checkChardev(ctx, props, expect);
    case '-blockdev':
      return checkBlockdev(ctx, props, expect);
    case '-netdev':
      return checkNetdev(ctx, props, expect);
    case '-device':
      return checkDevice(ctx, props, all);
    default:
      ctx.problems.push(`${flag}: no check for this option`);
  }
}

type Expect = (what: string, actual: unknown, expected: unknown) => void;

async function checkChardev(ctx: Context, props: Map<string, string>, expect: Expect): Promise<void> {
  const chardev = (await chardevs(ctx.qmp)).find((c) => c.label === props.get('id'));
  expect(`chardev ${props.get('id')} exists`, chardev !== undefined, true);
  const path = props.get('path') ?? '';
  if (props.get('backend') === 'socket' && props.get('server') === 'on' && props.has('fd')) {
    checkListeningFd(ctx, Number(props.get('fd')), expect);
  } else if (props.get('backend') === 'socket' && props.get('server') === 'on') {
    expect(`listening socket at ${path}`, existsSync(path) && statSync(path).isSocket(), true);
  } else if (props.get('backend') === 'socket') {
    // A client socket (vhost-user): the device that uses it connected during realize.
    expect(`client socket at ${path}`, existsSync(path) && statSync(path).isSocket(), true);
  } else if (props.get('backend') === 'file') {
    expect(`file at ${path}`, existsSync(path) && statSync(path).isFile(), true);
  } else {
    ctx.problems.push(`-chardev backend ${props.get('backend')}: no check for this backend`);
  }
  const logfile = props.get('logfile');
  if (logfile !== undefined) expect(`log file at ${logfile}`, existsSync(logfile) && statSync(logfile).isFile(), true);
}

/**
 * fd N of a server chardev: the launch put a listening socket there, bound at a path; QEMU's fd N
 * must be that very socket (same inode in /proc/net/unix), still listening, and the file at the
 * path a socket.
 */
function checkListeningFd(ctx: Context, fd: number, expect: Expect): void {
  const given = ctx.fds.find((entry) => entry.fd === fd);
  if (given?.kind !== 'listen') return expect(`fd ${fd} is a listening socket of the launch`, given, { fd, kind: 'listen' });
  const inode = socketInode(ctx.pid, fd);
  const socket = inode === undefined ? undefined : boundUnixSockets().find((s) => s.inode === inode);
  expect(`fd ${fd} bound at`, socket?.path, given.path);
  expect(`fd ${fd} listening`, socket?.listening, true);
  expect(`socket file at ${given.path}`, existsSync(given.path) && lstatSync(given.path).isSocket(), true);
}

function checkBlockdev(ctx: Context, props: Map<string, string>, expect: Expect): void {
  const name = props.get('node-name');
  const node = ctx.nodes.find((n) => n['node-name'] === name);
  if (!node) return expect(`node ${name} exists`, false, true);
  const filename = props.get('file.filename');
  expect(`${name} driver`, node.drv, props.get('driver'));
  expect(`${name} read-only`, node.ro, props.get('read-only') === 'on');
  expect(`${name} cache.direct`, node.cache.direct, props.get('cache.direct') === 'on');
  expect(`${name} cache.no-flush`, node.cache['no-flush'], props.get('cache.no-flush') === 'on');
  expect(`${name} file`, node.file, filename);
  expect(`${name} image`, node.image.filename, filename);
  // The protocol node below it: QEMU names it itself, so find it by driver and file name.
  const child = ctx.nodes.find((n) => n !== node && n.drv === props.get('file.driver') && n.file === filename);
  if (!child) return expect(`a ${props.get('file.driver')} node for ${filename}`, false, true);
  expect(`${name} file.read-only`, child.ro, props.get('file.read-only') === 'on');
  expect(`${name} file.cache.direct`, child.cache.direct, props.get('file.cache.direct') === 'on');
  expect(`${name} file.cache.no-flush`, child.cache['no-flush'], props.get('file.cache.no-flush') === 'on');
  // file.aio is not reported; QEMU refuses aio=native without cache.direct=on, so acceptance says it is consistent.
}

async function checkNetdev(ctx: Context, props: Map<string, string>, expect: Expect): Promise<void> {
  const id = props.get('id') ?? '';
  const queues = await tapQueues(ctx.qmp, id);
  expect(`${id} queues`, queues.length, Number(props.get('queues') ?? '1'));
  const backend = props.has('fd') ? `type=tap,fd=${props.get('fd')}` : `type=tap,ifname=${props.get('ifname')},script=no,downscript=no`;
  for (const [index, line] of queues.entries()) expect(`${id} queue ${index}`, line, `index=${index},${backend}`);
  if (props.has('fd')) {
    // A caller's fd: the launch passed one through at that number, and QEMU holds a tap there.
    const fd = Number(props.get('fd'));
    expect(`${id} fd ${fd} passed through`, ctx.fds.find((entry) => entry.fd === fd)?.kind, 'inherit');
    expect(`${id} fd ${fd} is a tap`, tapBehindFd(ctx.pid, fd) !== undefined, true);
  }
}

/** Where a device sits and each property it was given, read back from QEMU. */
async function checkDevice(ctx: Context, props: Map<string, string>, all: StructuredOption[]): Promise<void> {
  const id = props.get('id');
  if (id === undefined) return void ctx.problems.push(`-device ${props.get('driver')}: has no id to find it by`);
  const path = `/machine/peripheral/${id}`;
  const bus = props.get('bus');
  const addr = props.get('addr');
  const placed = ctx.pci.find((f) => f.qdevId === id);
  if (addr !== undefined) {
    const [slot, fn = '0'] = addr.replace(/^0x/, '').split('.');
    const expected = { qdevId: id, parent: bus, slot: parseInt(slot ?? '', 16), fn: Number(fn) };
    if (JSON.stringify(placed) !== JSON.stringify(expected)) ctx.problems.push(`-device ${id}: QEMU placed it at ${JSON.stringify(placed)}, the argv says ${JSON.stringify(expected)}`);
  } else if (bus !== undefined && isRootPort(bus, all)) {
    if (placed?.parent !== bus) ctx.problems.push(`-device ${id}: QEMU placed it behind ${placed?.parent}, the argv says ${bus}`);
  } else if (bus !== undefined) {
    const parentBus = String(await qomGet(ctx.qmp, path, 'parent_bus'));
    if (!parentBus.endsWith(`/${bus}`)) ctx.problems.push(`-device ${id}: its bus is ${parentBus}, the argv says ${bus}`);
  }
  await checkQomProperties(ctx, path, props, { driver: 'type' }, ['id', 'bus', 'addr']);
}

function isRootPort(id: string, all: StructuredOption[]): boolean {
  return all.some((o) => o.flag === '-device' && o.props?.get('id') === id && o.props.get('driver') === 'pcie-root-port');
}

/** qom-get of each property; `renamed` maps an option key to the QOM property it shows up as. */
async function checkQomProperties(ctx: Context, path: string, props: Map<string, string>, renamed: Record<string, string>, skip: string[]): Promise<void> {
  for (const [key, value] of props) {
    if (skip.includes(key)) continue;
    const property = renamed[key] ?? key;
    let actual: unknown;
    try {
      actual = await qomGet(ctx.qmp, path, property);
    } catch (error) {
      ctx.problems.push(`${path} ${property}: ${(error as Error).message}`);
      continue;
    }
    if (!sameValue(value, actual)) ctx.problems.push(`${path} ${property}: QEMU has ${JSON.stringify(actual)}, the argv says ${JSON.stringify(value)}`);
  }
}

/** An option string value against the typed value QOM returns (links come back as QOM paths). */
function sameValue(option: string, actual: unknown): boolean {
  if (typeof actual === 'boolean') return option === (actual ? 'on' : 'off');
  if (typeof actual === 'number') return Number(option) === actual;
  if (typeof actual === 'string') return actual === option || actual === `/objects/${option}`;
  return false;
}

function mebibytes(size: string | undefined): number {
  const match = /^(\d+)M$/.exec(size ?? '');
  if (!match) throw new Error(`not a size in MiB: ${size}`);
  return Number(match[1]) * 1024 * 1024;
}
