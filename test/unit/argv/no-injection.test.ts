// Property: whatever strings the config holds, the command line has the same shape (the same
// options, each with the same keys in the same order) and each string comes back, unchanged, as the
// value it was meant to be when the argv is parsed the way QEMU parses it. The runtime directory's
// socket paths now reach the launcher (`--listen N:PATH`), not QEMU: they are read back from there.
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import { launcherArgs } from '../../../src/qemu/launch/launcher.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { IMPLIED_KEY, parseOptionString, splitArgv, VERBATIM_FLAGS } from '../../helpers/qemu-options.ts';
import { randomString, seededRandom } from '../../helpers/random.ts';

/** Slots for free-form strings; each placeholder is a plain word in the baseline. */
const SLOTS = ['kernel', 'initrd', 'param', 'backing', 'log', 'disk', 'scsi', 'share', 'vfs', 'rng', 'runtime'] as const;
type Slot = (typeof SLOTS)[number];
type Fill = Record<Slot, string>;

const placeholder = (slot: Slot) => `XQ${slot}QX`;

function configWith(fill: Fill): SandboxConfigInput {
  return {
    id: 'vm-inject',
    machine: { accel: 'tcg' },
    boot: { kernel: `/k/${fill.kernel}`, initrd: `/i/${fill.initrd}`, kernelParams: ['console=ttyS0', `svmm.x=${fill.param}`] },
    memory: { bootMiB: 256, backing: { type: 'file', path: `/m/${fill.backing}` } },
    console: { socket: true, logFile: `/l/${fill.log}` },
    devices: [
      { type: 'block', id: 'disk0', path: `/d/${fill.disk}` },
      { type: 'block', id: 'disk1', path: `/s/${fill.scsi}`, driver: 'virtio-scsi' },
      { type: 'fs', driver: '9p', id: 'share0', tag: 'share', path: `/p/${fill.share}` },
      { type: 'fs', driver: 'virtio-fs', id: 'vfs0', tag: 'vfs', socketPath: `/v/${fill.vfs}` },
      { type: 'rng', id: 'rng0', source: `/r/${fill.rng}` },
      { type: 'channel', id: 'agent', name: 'agent.0' },
    ],
  };
}

/** QEMU's argv, then the launcher's own options before `--` (where the runtime dir's socket paths go). */
function argvFor(fill: Fill): { qemu: string[]; launcher: string[] } {
  // 'r-' keeps path.join in runtimePaths from normalizing a runtime dir named '.' or '..'.
  const { args, fds } = buildQemuArgv(parseSandboxConfig(configWith(fill)), runtimePaths(`/run/r-${fill.runtime}`));
  // Only the fds matter here: no identity or flags, so the launcher's options are all --listen/--keep-fd pairs.
  const launcher = launcherArgs({ program: '/usr/bin/qemu-system-x86_64', args, fds, user: undefined, dropCapabilities: false, dieWithParent: false });
  const end = launcher.indexOf('--');
  // What follows `--` is the program and QEMU's argv, passed on unchanged.
  if (JSON.stringify(launcher.slice(end + 1)) !== JSON.stringify(['/usr/bin/qemu-system-x86_64', ...args])) throw new Error(`the launcher does not pass QEMU's argv on unchanged: ${JSON.stringify(launcher)}`);
  return { qemu: args, launcher: launcher.slice(0, end) };
}

/**
 * The argv as QEMU reads it: each option's flag, and its keys and values (or its verbatim argument);
 * then each launcher option as svmm-launch reads it (`--listen N:PATH` splits at the first colon).
 */
function readBack({ qemu, launcher }: { qemu: string[]; launcher: string[] }): { flag: string; entries: [string, string][] }[] {
  const options = splitArgv(qemu).map(({ flag, raw }): { flag: string; entries: [string, string][] } => {
    if (raw === undefined) return { flag, entries: [] };
    if (VERBATIM_FLAGS.has(flag)) return { flag, entries: [['(verbatim)', raw]] };
    return { flag, entries: parseOptionString(raw, IMPLIED_KEY[flag]) };
  });
  for (let i = 0; i < launcher.length; i += 2) {
    const flag = launcher[i] as string;
    const value = launcher[i + 1] as string;
    if (flag !== '--listen' && flag !== '--keep-fd') throw new Error(`unexpected launcher option ${flag}`);
    const colon = value.indexOf(':');
    options.push({ flag, entries: flag === '--listen' ? [[value.slice(0, colon), value.slice(colon + 1)]] : [['fd', value]] });
  }
  return options;
}

const baselineFill = Object.fromEntries(SLOTS.map((slot) => [slot, placeholder(slot)])) as Fill;
const baseline = readBack(argvFor(baselineFill));

/** The baseline with each placeholder replaced by the string filled in its slot. */
function expectedFor(fill: Fill) {
  const substitute = (value: string) => SLOTS.reduce((out, slot) => out.replaceAll(placeholder(slot), () => fill[slot]), value);
  return baseline.map(({ flag, entries }) => ({ flag, entries: entries.map(([key, value]) => [key, substitute(value)]) }));
}

const PATH_ALPHABET = [...'ab.,,,===  -_:"\'\\{}[]$&;|éü中🙂'];
/** The kernel takes whitespace and quotes as its own syntax, and only ASCII is safe from its isspace(). */
const PARAM_ALPHABET = [...'ab.,,,===-_:\'\\{}[]$&;|'];

function randomFill(random: () => number): Fill {
  const fill = {} as Fill;
  for (const slot of SLOTS) fill[slot] = randomString(random, slot === 'param' ? PARAM_ALPHABET : PATH_ALPHABET, 20) || 'x';
  return fill;
}

describe('no config string can change the shape of the command line', () => {
  it('the baseline uses every slot, so that the property below checks each of them', () => {
    const text = JSON.stringify(baseline);
    for (const slot of SLOTS) expect(text).toContain(placeholder(slot));
  });

  it('holds for 300 random configs full of commas, equals signs, quotes, spaces and unicode', () => {
    const random = seededRandom(20240611);
    for (let i = 0; i < 300; i++) {
      const fill = randomFill(random);
      expect(readBack(argvFor(fill)), JSON.stringify(fill)).toEqual(expectedFor(fill));
    }
  });

  it.each([
    'x.img,readonly=on',
    'a.img,file.driver=nbd',
    ',',
    ',,',
    'a=b',
    'x,id=evil,',
    'json:{"driver":"nbd"}',
    'disk,format=qcow2,backing=/etc/shadow',
  ])('holds when every slot is %j', (value) => {
    const fill = Object.fromEntries(SLOTS.map((slot) => [slot, value])) as Fill;
    expect(readBack(argvFor(fill))).toEqual(expectedFor(fill));
  });
});
