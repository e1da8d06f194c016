// `npm run bench -- qmp`: the QMP client against a bare `net` socket loop (written below, no library
// code), both driving the same paused QEMU, alternated round by round (serial round trips also in
// small alternating blocks within a round). Each side gets its own QMP monitor, and the two swap
// monitors every round so that neither always meets the same one. Figures are medians over rounds
// of the time per round trip (query-status); ratio = library / raw. QEMU is started as the library
// starts it: through svmm-launch, which binds both monitors' sockets and hands them over as fds 3
// and 4, as an unprivileged uid (a fixed one: nothing here depends on which).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { resolveBinary } from '../src/qemu/binaries.ts';
import { findLauncher, launcherArgs, launcherStdio, type LaunchSpec } from '../src/qemu/launch/launcher.ts';
import { QmpClient } from '../src/qmp/index.ts';
import { BENCH_QEMU, benchQemuLabel } from './qemu.ts';
import { median, round, writeResult } from './stats.ts';

const ROUNDS = Number(process.env['BENCH_QMP_ROUNDS'] ?? 9);
const N = Number(process.env['BENCH_QMP_N'] ?? 2000);
/** Serial round trips per side before the other side takes its turn. */
const SERIAL_BLOCK = 100;
/** Who the benchmark's QEMU runs as: near the top of the library's uid lease range, which leases (lowest first) do not reach. */
const QEMU_UID = 1_900_065_499;

/** One side of the comparison: sends query-status and resolves on its reply. */
interface Driver {
  roundTrip(): Promise<unknown>;
  close(): Promise<void>;
}

// ------------------------------------------------------------------ the raw baseline

/** What a script talking QMP by hand would write: a socket, a line buffer, ids in a map. */
async function openRawDriver(path: string): Promise<Driver> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
  socket.setEncoding('utf8');
  let buffer = '';
  let nextId = 0;
  const waiting = new Map<number, (value: unknown) => void>();
  let greeted: () => void = () => {};
  const greeting = new Promise<void>((resolve) => (greeted = resolve));
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const message = JSON.parse(buffer.slice(0, newline)) as Record<string, unknown>;
      buffer = buffer.slice(newline + 1);
      if ('QMP' in message) greeted();
      else if (typeof message['id'] === 'number') {
        const resolve = waiting.get(message['id']);
        waiting.delete(message['id']);
        resolve?.(message['return']);
      }
    }
  });
  const execute = (command: string): Promise<unknown> =>
    new Promise((resolve) => {
      const id = nextId++;
      waiting.set(id, resolve);
      socket.write(`${JSON.stringify({ execute: command, id })}\n`);
    });
  await greeting;
  await execute('qmp_capabilities');
  return {
    roundTrip: () => execute('query-status'),
    close: () =>
      new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.destroy();
      }),
  };
}

// ------------------------------------------------------------------ the library

async function openLibraryDriver(path: string): Promise<Driver> {
  const client = await QmpClient.connect(path);
  return { roundTrip: () => client.execute('query-status'), close: () => client.close() };
}

// ------------------------------------------------------------------ QEMU

interface Qemu {
  dir: string;
  sockets: [string, string];
  child: ChildProcess;
  exited: Promise<void>;
}

function startQemu(): Qemu {
  const dir = mkdtempSync('/tmp/q-');
  const sockets: [string, string] = [join(dir, 'a.sock'), join(dir, 'b.sock')];
  const monitors = sockets.flatMap((_, i) => ['-chardev', `socket,id=qmp${i},fd=${3 + i},server=on,wait=off`, '-mon', `chardev=qmp${i},mode=control`]);
  const args = ['-S', '-nodefaults', '-no-user-config', '-display', 'none', '-machine', 'q35', '-accel', 'tcg', ...monitors];
  const spec: LaunchSpec = {
    program: resolveBinary(BENCH_QEMU, 'qemuPath'),
    args,
    fds: sockets.map((path, i) => ({ fd: 3 + i, kind: 'listen', path })),
    user: { uid: QEMU_UID, gid: QEMU_UID, groups: [] },
    dropCapabilities: true,
    dieWithParent: true,
  };
  // stderr goes to ours (fd 2), as before.
  const child = spawn(findLauncher(), launcherArgs(spec), { stdio: launcherStdio(spec, 2), env: {} });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { dir, sockets, child, exited };
}

async function stopQemu(qemu: Qemu): Promise<void> {
  if (qemu.child.exitCode === null && qemu.child.signalCode === null) qemu.child.kill('SIGKILL');
  await qemu.exited;
  rmSync(qemu.dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ measuring

/** Wall time and this process's CPU time per round trip, in µs. */
interface Timing {
  wall: number;
  cpu: number;
}

async function timePerRoundTrip(n: number, work: () => Promise<void>): Promise<Timing> {
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  await work();
  const wall = ((performance.now() - start) * 1000) / n;
  const cpu = process.cpuUsage(cpuStart);
  return { wall, cpu: (cpu.user + cpu.system) / n };
}

function serial(driver: Driver, n: number): Promise<Timing> {
  return timePerRoundTrip(n, async () => {
    for (let i = 0; i < n; i++) await driver.roundTrip();
  });
}

/**
 * Serial round trips, n per side, in blocks that alternate between the sides, so that both meet the
 * same moments of a noisy machine (a round trip is mostly QEMU waking up, which the load sways).
 */
async function interleavedSerial(first: Driver, second: Driver, n: number): Promise<[Timing, Timing]> {
  const totals: [Timing, Timing] = [
    { wall: 0, cpu: 0 },
    { wall: 0, cpu: 0 },
  ];
  // Once for the whole phase: a collection before every block would mostly measure the page faults
  // of refilling the heap, which the side that allocates more would pay for.
  collectGarbage();
  const blocks = Math.max(1, Math.round(n / SERIAL_BLOCK));
  for (let b = 0; b < blocks; b++) {
    const size = Math.floor(((b + 1) * n) / blocks) - Math.floor((b * n) / blocks);
    const order: [Driver, 0 | 1][] = b % 2 === 0 ? [[first, 0], [second, 1]] : [[second, 1], [first, 0]];
    for (const [driver, side] of order) {
      const t = await serial(driver, size);
      totals[side].wall += (t.wall * size) / n;
      totals[side].cpu += (t.cpu * size) / n;
    }
  }
  return totals;
}

function pipelined(driver: Driver, n: number): Promise<Timing> {
  collectGarbage();
  return timePerRoundTrip(n, async () => {
    const replies: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) replies.push(driver.roundTrip());
    await Promise.all(replies);
  });
}

function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

interface Sample {
  serial: Timing;
  pipelined: Timing;
}

/** Polls until QEMU listens on both sockets (it creates them a moment after it starts). */
async function openWhenListening(open: (path: string) => Promise<Driver>, path: string): Promise<Driver> {
  const end = Date.now() + 30_000;
  for (;;) {
    try {
      return await open(path);
    } catch (error) {
      if (Date.now() > end) throw error;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

export async function run(): Promise<void> {
  const qemu = startQemu();
  try {
    const lib: Sample[] = [];
    const raw: Sample[] = [];
    // Round -1 warms both sides up (JIT, QEMU's caches) and is not counted.
    for (let r = -1; r < ROUNDS; r++) {
      const libSocket = qemu.sockets[r & 1] as string;
      const rawSocket = qemu.sockets[(r + 1) & 1] as string;
      const libDriver = await openWhenListening(openLibraryDriver, libSocket);
      const rawDriver = await openWhenListening(openRawDriver, rawSocket);
      try {
        const libFirst = r % 2 === 0;
        const [firstDriver, secondDriver] = libFirst ? [libDriver, rawDriver] : [rawDriver, libDriver];
        const [firstSerial, secondSerial] = await interleavedSerial(firstDriver, secondDriver, N);
        const firstPipelined = await pipelined(firstDriver, N);
        const secondPipelined = await pipelined(secondDriver, N);
        if (r < 0) continue;
        const first: Sample = { serial: firstSerial, pipelined: firstPipelined };
        const second: Sample = { serial: secondSerial, pipelined: secondPipelined };
        lib.push(libFirst ? first : second);
        raw.push(libFirst ? second : first);
        const last = { lib: lib[lib.length - 1] as Sample, raw: raw[raw.length - 1] as Sample };
        console.log(
          `round ${r + 1}/${ROUNDS}: serial lib ${last.lib.serial.wall.toFixed(1)} µs raw ${last.raw.serial.wall.toFixed(1)} µs; ` +
            `pipelined lib ${last.lib.pipelined.wall.toFixed(2)} µs raw ${last.raw.pipelined.wall.toFixed(2)} µs`,
        );
      } finally {
        await libDriver.close();
        await rawDriver.close();
      }
    }
    const libSerialUs = median(lib.map((s) => s.serial.wall));
    const rawSerialUs = median(raw.map((s) => s.serial.wall));
    const libPipelinedUs = median(lib.map((s) => s.pipelined.wall));
    const rawPipelinedUs = median(raw.map((s) => s.pipelined.wall));
    // Node's own CPU time per round trip: where the client's overhead shows, as QEMU's time does not.
    const cpuUs = {
      libSerial: round(median(lib.map((s) => s.serial.cpu))),
      rawSerial: round(median(raw.map((s) => s.serial.cpu))),
      libPipelined: round(median(lib.map((s) => s.pipelined.cpu))),
      rawPipelined: round(median(raw.map((s) => s.pipelined.cpu))),
    };
    const result = {
      libSerialUs: round(libSerialUs),
      rawSerialUs: round(rawSerialUs),
      serialRatio: round(libSerialUs / rawSerialUs),
      libPipelinedUs: round(libPipelinedUs),
      rawPipelinedUs: round(rawPipelinedUs),
      pipelinedRatio: round(libPipelinedUs / rawPipelinedUs),
      rounds: ROUNDS,
      n: N,
      cpuUs,
    };
    console.log(`\nQMP round trip (query-status), median µs per command over ${ROUNDS} rounds of ${N}`);
    console.log(`serial     library ${result.libSerialUs.toFixed(2)}  raw ${result.rawSerialUs.toFixed(2)}  ratio ${result.serialRatio.toFixed(3)}`);
    console.log(`pipelined  library ${result.libPipelinedUs.toFixed(2)}  raw ${result.rawPipelinedUs.toFixed(2)}  ratio ${result.pipelinedRatio.toFixed(3)}`);
    console.log(`Node CPU µs per command: serial library ${cpuUs.libSerial} raw ${cpuUs.rawSerial}; pipelined library ${cpuUs.libPipelined} raw ${cpuUs.rawPipelined}`);
    console.log(`wrote ${writeResult('qmp', benchQemuLabel(), result)}`);
  } finally {
    await stopQemu(qemu);
  }
}
