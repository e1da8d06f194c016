// README.md's main example (the ts block after `<!-- main-example`), executed as written against
// the test guest under TCG. Only what names this host is substituted: the guest's kernel and
// initrd, the disk image, the shared directory, `accel: 'kvm'` (KVM does not work here), and the
// module it imports, which is the library with a look from inside the guest after each call
// (helpers/readme-verifier.ts). Its kernel command line stays the README's `console=ttyS0`.
//
// The example runs in a child process inside a network namespace this test makes (so that the tap
// it hot-plugs, `tap-pod1`, is the namespace's), and must exit 0 having passed every check.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestAssets } from '../guest/index.ts';
import { SHARE_MARKER } from './helpers/readme-verifier.ts';
import { scratchDir } from './helpers/sandbox.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const NETNS = `svmm-it-readme-${process.pid}`;
// The type-check's own comment (test/package/helpers/readme-blocks.ts) may sit between the marker and the fence.
const MAIN_EXAMPLE = /<!-- main-example[^>]*-->\s*(?:<!--[\s\S]*?-->\s*)?```ts\n([\s\S]*?)\n```/;
/** The checks the verifier passes, in the order the example's calls make them. */
const CHECKS = ['started', 'block', 'net', 'memory', 'vcpus', 'virtiofs', 'stopped'];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Replaces each `from` that must occur exactly once, so that a README edit that drops one fails here. */
function substitute(code: string, substitutions: [from: string, to: string][]): string {
  return substitutions.reduce((text, [from, to]) => {
    const count = text.split(from).length - 1;
    if (count !== 1) throw new Error(`README main example: expected ${JSON.stringify(from)} once, found it ${count} times`);
    return text.replace(from, to);
  }, code);
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe("README's main example", () => {
  const scratch = scratchDir();

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NETNS]);
    // No owner: any uid may attach it, which the VM's leased uid (unknown until createVM) needs.
    execFileSync('ip', ['-n', NETNS, 'tuntap', 'add', 'dev', 'tap-pod1', 'mode', 'tap']);
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'del', NETNS]);
    scratch.remove();
  });

  it('runs as written against the test guest, and the guest sees what each call did', async () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const example = MAIN_EXAMPLE.exec(readme)?.[1];
    expect(example, 'README.md has a main example').toBeDefined();
    const guest = guestAssets();
    const vol = join(scratch.dir, 'vol1.img');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', vol, '64M']);
    execFileSync('chmod', ['0666', vol]); // the VM's uid is leased at createVM, inside the example
    const share = join(scratch.dir, 'rootfs');
    execFileSync('mkdir', ['-m', '0755', share]);
    const marker = `from the host ${process.pid}`;
    writeFileSync(join(share, SHARE_MARKER), `${marker}\n`);
    const verifier = join(root, 'test', 'integration', 'helpers', 'readme-verifier.ts');
    const code = substitute(example as string, [
      ["'/path/vmlinuz'", JSON.stringify(guest.kernel)],
      ["'/path/initrd.img'", JSON.stringify(guest.initrd)],
      ["'/var/lib/vol1.img'", JSON.stringify(vol)],
      ["'/run/pod/rootfs'", JSON.stringify(share)],
      ["accel: 'kvm'", "accel: 'tcg'"],
      ["from 'sandbox-vmm'", `from ${JSON.stringify(verifier)}`],
    ]);
    const script = join(scratch.dir, 'main-example.mts');
    writeFileSync(script, `import { logger } from ${JSON.stringify(verifier)};\n${code}\n`);

    // The QEMU the integration tests use, found in PATH as the example's default qemuPath is.
    const qemu = process.env['SANDBOX_VMM_QEMU'];
    const path = qemu ? `${dirname(qemu)}:${process.env['PATH'] ?? ''}` : (process.env['PATH'] ?? '');
    const result = await run('ip', ['netns', 'exec', NETNS, process.execPath, '--import', 'tsx', script], { ...process.env, PATH: path });
    const failure = `exit ${String(result.code)}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
    expect(result.code, failure).toBe(0);

    const checks = new Map(
      [...result.stdout.matchAll(/^README-CHECK (\S+) (.*)$/gm)].map((m) => [m[1] as string, JSON.parse(m[2] as string) as Record<string, unknown>]),
    );
    expect([...checks.keys()], failure).toEqual(CHECKS);
    expect(checks.get('started')).toMatchObject({ cmdline: 'console=ttyS0' }); // nothing added to it
    expect(checks.get('block')).toMatchObject({ id: 'vol1', bytes: 64 * 1024 * 1024 });
    expect(checks.get('net')).toMatchObject({ id: 'eth1', mac: '52:54:00:12:34:56' });
    expect(checks.get('memory')).toMatchObject({ previousMiB: 512, currentMiB: 2048 });
    expect(checks.get('vcpus')).toMatchObject({ previous: 1, current: 2, online: 2 });
    expect(checks.get('virtiofs')).toEqual({ tag: 'rootfs', marker });
    const stopped = checks.get('stopped') as { state: string; pids: number[]; runtimeDir: string | null };
    expect(stopped).toMatchObject({ state: 'stopped', pids: [] });
    expect(stopped.runtimeDir === null || !existsSync(stopped.runtimeDir), `runtime directory ${String(stopped.runtimeDir)} removed`).toBe(true);

    // The example's own output: the NIC's guest PCI path, then QEMU and virtiofsd and the resize.
    expect(result.stdout).toMatch(/\{ path: '[0-9a-f]{2}\/00', sysfs: '0000:00:[0-9a-f]{2}\.0\/0000:[0-9a-f]{2}:00\.0' \}/);
    const pids = /^\[ (\d+), (\d+) \] \{ previousMiB: 512, currentMiB: 2048 \}$/m.exec(result.stdout);
    expect(pids, failure).not.toBeNull();
    for (const pid of (pids as RegExpExecArray).slice(1).map(Number)) expect(existsSync(`/proc/${pid}`), `process ${pid} is gone`).toBe(false);
  });
});
