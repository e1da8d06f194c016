// The tarball installed into a scratch project (test/package/global-setup.ts), used as a runtime
// uses it: each entry point imported from ESM by plain Node, and a consumer's file type-checked
// against the shipped declarations under Node's and a bundler's module resolution.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';
import { typecheck, type Resolution } from './helpers/tsc.ts';

const execFileAsync = promisify(execFile);
const consumerDir = inject('consumerDir');

const entryPoints = {
  'sandbox-vmm': () => import('../../src/index.ts'),
  'sandbox-vmm/qmp': () => import('../../src/qmp/index.ts'),
  'sandbox-vmm/conformance': () => import('../../src/conformance/index.ts'),
};

/** What plain Node, in the consumer project, gets from `import(specifier)`: its export names, or the error's code. */
async function importInConsumer(specifier: string): Promise<{ names?: string[]; error?: string }> {
  const script = `import(${JSON.stringify(specifier)}).then((m) => console.log(JSON.stringify({ names: Object.keys(m).sort() })), (e) => console.log(JSON.stringify({ error: e.code ?? String(e) })))`;
  const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '--eval', script], { cwd: consumerDir });
  return JSON.parse(stdout) as { names?: string[]; error?: string };
}

const consumerSource = `
import { createHypervisor, MockHypervisor, parseSandboxConfig, QemuHypervisor, SandboxVmmError, type Hypervisor, type SandboxConfigInput } from 'sandbox-vmm';
import { QmpClient, QmpCommandError } from 'sandbox-vmm/qmp';
import { defineConformanceSuite, type ConformanceOptions } from 'sandbox-vmm/conformance';

const config: SandboxConfigInput = { boot: { kernel: '/boot/vmlinuz' }, machine: { accel: 'tcg' } };
const mock: MockHypervisor = createHypervisor('mock');
const vms: Hypervisor[] = [mock, new QemuHypervisor()];
await mock.createVM(parseSandboxConfig(config));
const client: Promise<QmpClient> = QmpClient.connect('/run/qmp.sock');
const suite: (api: Parameters<typeof defineConformanceSuite>[0], options: ConformanceOptions) => void = defineConformanceSuite;
const failed = (error: unknown): string | undefined => (error instanceof SandboxVmmError || error instanceof QmpCommandError ? error.code : undefined);
export { client, failed, suite, vms };
`;

describe('the installed package', () => {
  for (const [specifier, source] of Object.entries(entryPoints)) {
    it(`imports ${specifier} from ESM with every export the source has`, async () => {
      const expected = Object.keys(await source()).sort();
      expect(expected.length).toBeGreaterThan(0);
      expect(await importInConsumer(specifier)).toEqual({ names: expected });
    });
  }

  it('keeps the internals out of reach: a deep import is refused by the exports map', async () => {
    expect(await importInConsumer('sandbox-vmm/dist/src/qemu/argv/index.js')).toEqual({ error: 'ERR_PACKAGE_PATH_NOT_EXPORTED' });
  });

  for (const resolution of ['nodenext', 'bundler'] satisfies Resolution[]) {
    it(`type-checks a consumer of every entry point, with ${resolution} resolution and the package's declarations checked`, async () => {
      const deepImport = `// @ts-expect-error the exports map has no such subpath\nimport type {} from 'sandbox-vmm/dist/src/qemu/argv/index.js';\n`;
      expect(await typecheck(consumerDir, `consumer-${resolution}`, { 'consumer.ts': consumerSource + deepImport }, resolution)).toEqual([]);
    });
  }
});
