// The conformance suite against a backend that does not see the host (the mock with `host: false`,
// which takes every path to exist): exactly the three tests that prove missing files and namespaces
// are refused fail, and none after them (a failing test on a shared VM leaves no device behind to
// take the next tests' slots). Run through a small in-process runner so the failures can be counted.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defineConformanceSuite, type ConformanceOptions, type ConformanceTestApi } from '../../src/conformance/index.ts';
import { Harness } from '../../src/conformance/harness.ts';
import { resolveOptions } from '../../src/conformance/options.ts';
import { MockHypervisor } from '../../src/mock/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-host-false-'));
const kernel = join(dir, 'vmlinuz');
writeFileSync(kernel, '');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Fn = () => Promise<void>;
type Entry = { kind: 'test'; name: string; fn: Fn } | { kind: 'suite'; suite: Suite };
interface Suite {
  entries: Entry[];
  before: Fn[];
  after: Fn[];
}

/** Registers like a test framework, then runs everything in order; returns each test's error. */
function inProcessRunner(): { api: ConformanceTestApi; run: () => Promise<Map<string, unknown>> } {
  const top: Suite = { entries: [], before: [], after: [] };
  let current = top;
  const api: ConformanceTestApi = {
    describe: (_name, fn) => {
      const suite: Suite = { entries: [], before: [], after: [] };
      current.entries.push({ kind: 'suite', suite });
      const parent = current;
      current = suite;
      fn();
      current = parent;
    },
    it: (name, fn) => void current.entries.push({ kind: 'test', name, fn }),
    beforeAll: (fn) => void current.before.push(fn),
    afterAll: (fn) => void current.after.push(fn),
  };
  const results = new Map<string, unknown>();
  const runSuite = async (suite: Suite): Promise<void> => {
    for (const hook of suite.before) await hook();
    for (const entry of suite.entries) {
      if (entry.kind === 'suite') await runSuite(entry.suite);
      else results.set(entry.name, await entry.fn().then(() => undefined, (error: unknown) => error ?? 'failed'));
    }
    for (const hook of suite.after) await hook();
  };
  return { api, run: async () => (await runSuite(top), results) };
}

function options(disk: ConformanceOptions['disk']): ConformanceOptions {
  return {
    name: 'mock (host: false)',
    create: (settings) => new MockHypervisor({ deviceRemovalTimeoutMs: settings.deviceRemovalTimeoutMs, guestOpensChannels: ['agent'], host: false }),
    config: () => ({ boot: { kernel }, devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }] }),
    disk,
    // The mock keeps templates in memory, by directory: a fresh name is all it needs.
    templateDir: (name: string) => join(dir, `template-${name}`),
    timeouts: { testMs: 10_000, removalMs: 300, guestMs: 3_000, settleMs: 20 },
  };
}

describe('the conformance suite against a backend that does not see the host', () => {
  it('fails exactly the tests of host refusals, and none after them', async () => {
    const runner = inProcessRunner();
    defineConformanceSuite(runner.api, options((name) => {
      const path = join(dir, `${name}.img`);
      writeFileSync(path, '');
      return path;
    }));
    const results = await runner.run();
    const failed = [...results].filter(([, error]) => error !== undefined).map(([name]) => name);
    expect(failed).toEqual([
      'createVM validates the config, fills its defaults and starts nothing',
      'a start the hypervisor cannot complete fails with VmStartError saying why, and cleans up',
      'a hotplug that fails (missing image) is a HotplugError that leaves nothing plugged and frees its slot',
    ]);
    expect(results.size).toBeGreaterThan(20);
  }, 60_000);

  it('says so when disk() returns a path it did not create', async () => {
    const harness = new Harness(resolveOptions(options((name) => join(dir, `never-made-${name}.img`))));
    await expect(harness.disk('d', new MockHypervisor())).rejects.toThrow(/returned .*never-made-d-1\.img, which does not exist: disk\(\) must create the image file/);
  });
});
