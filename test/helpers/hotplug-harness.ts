// One fake QEMU for the hotplug unit tests: a fake QMP server on a real unix socket, a client
// connected to it, and HotplugContexts over that client whose log lines are kept for assertions.
import { vcpuRules } from '../../src/hypervisor/resources.ts';
import { profileOf } from '../../src/hypervisor/arch-profiles.ts';
import type { QemuVersion } from '../../src/hypervisor/version-rules.ts';
import { afterEach, beforeEach, expect } from 'vitest';
import { pino } from 'pino';
import { parseSandboxConfig, type SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import { QmpClient } from '../../src/qmp/index.ts';
import type { HotplugContext } from '../../src/qemu/hotplug/context.ts';
import { emptyHotplugState } from '../../src/qemu/hotplug/state.ts';
import { Deadline } from '../../src/util/deadline.ts';
import type { Logger } from '../../src/util/logger.ts';
import { FakeQmpServer } from './fake-qmp-server.ts';

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  [field: string]: unknown;
}

const LEVELS: Record<number, LogRecord['level']> = { 20: 'debug', 30: 'info', 40: 'warn', 50: 'error' };

/** A pino logger that keeps what it writes (synchronously), level names spelled out. */
export function recordingLogger(): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const stream = {
    write(line: string) {
      const { level, time: _time, pid: _pid, hostname: _hostname, ...rest } = JSON.parse(line) as Record<string, unknown>;
      records.push({ ...rest, level: LEVELS[level as number] ?? 'debug' } as LogRecord);
    },
  };
  return { logger: pino({ level: 'debug' }, stream), records };
}

export interface ContextOptions {
  timeoutMs?: number;
  /** The QEMU version the vCPU rules are chosen for (hypervisor/version-rules.ts). Default: unknown (the oldest's rules). */
  qemuVersion?: QemuVersion;
  removalTimeoutMs?: number;
  /** Default: the machine's (ArchProfile.freedSlotSettleMs). */
  freedSlotSettleMs?: number;
}

export interface HotplugHarness {
  readonly server: FakeQmpServer;
  readonly qmp: QmpClient;
  /** What the HotplugContexts logged. */
  readonly logs: LogRecord[];
  /** What the QMP client itself logged (a throwing event predicate is logged there). */
  readonly qmpLogs: LogRecord[];
  /** A fresh context (empty state) on a q35 VM with two hotplug root ports unless `config` says otherwise. */
  context(config?: Partial<SandboxConfigInput>, options?: ContextOptions): HotplugContext;
  /** Every command the server got after negotiation, as [name, arguments]. */
  sent(): [string, Record<string, unknown> | undefined][];
  /** The commands that change QEMU (everything but the query-* and qom-get reads). */
  changes(): [string, Record<string, unknown> | undefined][];
}

/** Registers beforeEach/afterEach hooks that start and stop a fresh fake QEMU for each test. */
export function useHotplugHarness(): HotplugHarness {
  let server: FakeQmpServer | undefined;
  let qmp: QmpClient | undefined;
  let logs: LogRecord[] = [];
  let qmpLogs: LogRecord[] = [];
  const deadlines: Deadline[] = [];

  beforeEach(async () => {
    server = await FakeQmpServer.start();
    const recorded = recordingLogger();
    qmpLogs = recorded.records;
    qmp = await QmpClient.connect(server.path, { logger: recorded.logger });
    logs = [];
  });

  afterEach(async () => {
    for (const d of deadlines.splice(0)) d.dispose();
    await qmp?.close();
    await server?.close();
  });

  const sent = (): [string, Record<string, unknown> | undefined][] =>
    (server as FakeQmpServer).received.filter((c) => c.execute !== 'qmp_capabilities').map((c) => [c.execute, c.arguments]);

  return {
    get server() {
      return server as FakeQmpServer;
    },
    get qmp() {
      return qmp as QmpClient;
    },
    get logs() {
      return logs;
    },
    get qmpLogs() {
      return qmpLogs;
    },
    context(config = {}, options = {}) {
      const deadline = new Deadline('test', { timeoutMs: options.timeoutMs ?? 5_000 });
      deadlines.push(deadline);
      const recorded = recordingLogger();
      logs = recorded.records;
      const parsed = parseSandboxConfig({ boot: { kernel: '/k' }, hotplug: { rootPorts: 2 }, ...config });
      return {
        qmp: qmp as QmpClient,
        config: parsed,
        state: emptyHotplugState(),
        vcpuRules: vcpuRules(parsed, options.qemuVersion),
        deadline,
        logger: recorded.logger,
        removalTimeoutMs: options.removalTimeoutMs ?? 2_000,
        freedSlotSettleMs: options.freedSlotSettleMs ?? profileOf(parsed).freedSlotSettleMs,
      };
    },
    sent,
    changes: () => sent().filter(([name]) => !name.startsWith('query-') && name !== 'qom-get'),
  };
}

/** Settles once the event loop has turned: replies and events already on the socket are handled. */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Whether `promise` has settled, without waiting for it. */
export function tracked<T>(promise: Promise<T>): { promise: Promise<T>; readonly settled: boolean } {
  let settled = false;
  const watched = promise.finally(() => {
    settled = true;
  });
  watched.catch(() => {});
  return {
    promise: watched,
    get settled() {
      return settled;
    },
  };
}

/** Matches a logged error (pino's serialized `err`) whose message contains `text`. */
export function loggedError(text: string): unknown {
  return expect.objectContaining({ message: expect.stringContaining(text) as unknown });
}
