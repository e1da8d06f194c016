// The native fd sender's failure paths, with stand-in helpers (shell scripts) in place of
// build/svmm-sendfd: a helper that fails is reported with its stderr (capped) or its exit status,
// a helper that cannot run says why, and an unusable helper is refused before it is ever run.
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpFdPassingError } from '../../../src/qmp/index.ts';
import { checkedFdSender, defaultFdSender, NativeFdSender } from '../../../src/qmp/fd-sender.ts';
import { rejection } from './harness.ts';

let dir: string;
let server: Server;
let socket: Socket;
let fd: number;

/** A stand-in helper: `body` runs under /bin/sh (the sender gives it no PATH). */
function helper(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return path;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'svmm-fd-sender-'));
  const path = join(dir, 'qmp.sock');
  server = createServer((peer) => peer.resume());
  await new Promise<void>((resolve) => server.listen(path, resolve));
  socket = connect(path);
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  fd = openSync('/dev/null', 'r');
});

afterAll(async () => {
  closeSync(fd);
  socket.destroy();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

describe('NativeFdSender', () => {
  it('resolves when the helper exits 0 after reading the message', async () => {
    const sender = new NativeFdSender(helper('ok', 'while read -r line; do :; done; exit 0'));
    await expect(sender.send(socket, '{"execute":"getfd"}\n', fd, 'getfd')).resolves.toBeUndefined();
  });

  it("reports a failing helper's stderr, trimmed, in a QmpFdPassingError naming the command", async () => {
    const sender = new NativeFdSender(helper('fails', 'echo "  sendmsg: Broken pipe  " >&2; exit 3'));
    const error = await rejection(sender.send(socket, '{}\n', fd, 'add-fd'), QmpFdPassingError);
    expect(error.command).toBe('add-fd');
    expect(error.message).toBe('cannot send an fd with QMP command add-fd: sendmsg: Broken pipe');
  });

  it('caps the stderr it keeps at 4096 characters, across several writes', async () => {
    // Three writes of 3000 characters, apart in time so that they tend to arrive as separate chunks.
    const line = 'x'.repeat(2999);
    const sender = new NativeFdSender(helper('chatty', `for i in 1 2 3; do echo ${line} >&2; /bin/sleep 0.05; done; exit 1`));
    const error = await rejection(sender.send(socket, '{}\n', fd, 'getfd'), QmpFdPassingError);
    const reason = error.message.slice('cannot send an fd with QMP command getfd: '.length);
    expect(reason).toBe(`${'x'.repeat(2999)}\n${'x'.repeat(1096)}`);
  });

  it('names the exit status of a helper that fails silently', async () => {
    const path = helper('silent', 'exit 7');
    const error = await rejection(new NativeFdSender(path).send(socket, '{}\n', fd, 'getfd'), QmpFdPassingError);
    expect(error.message).toBe(`cannot send an fd with QMP command getfd: ${path} exited with status 7`);
  });

  it('names the signal that killed the helper', async () => {
    const path = helper('killed', 'kill -9 $$');
    const error = await rejection(new NativeFdSender(path).send(socket, '{}\n', fd, 'getfd'), QmpFdPassingError);
    expect(error.message).toBe(`cannot send an fd with QMP command getfd: ${path} exited with SIGKILL`);
  });

  it('survives a helper that exits before reading the message (EPIPE on its stdin)', async () => {
    const path = helper('early', 'exit 2');
    // Far more than a pipe holds: the write is still going when the helper is gone.
    const error = await rejection(new NativeFdSender(path).send(socket, `${'x'.repeat(4 << 20)}\n`, fd, 'getfd'), QmpFdPassingError);
    expect(error.message).toContain('exited with status 2');
  });

  it('says why a helper that cannot be run did not run, with the spawn error as cause', async () => {
    const path = join(dir, 'absent');
    const error = await rejection(new NativeFdSender(path).send(socket, '{}\n', fd, 'getfd'), QmpFdPassingError);
    expect(error.message).toMatch(new RegExp(`^cannot send an fd with QMP command getfd: ${path} could not run \\(.*ENOENT`));
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });
});

describe('checkedFdSender', () => {
  it('refuses when no package root was found, saying to pass fdSender', () => {
    expect(() => checkedFdSender(undefined, 'getfd')).toThrow(
      new QmpFdPassingError('getfd', 'no sandbox-vmm package.json above this module, so build/svmm-sendfd cannot be found: pass fdSender'),
    );
  });

  it('refuses a helper that is not built, saying how to build it', () => {
    const path = join(dir, 'not-built');
    const error = (() => {
      try {
        checkedFdSender(path, 'getfd');
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(QmpFdPassingError);
    expect((error as QmpFdPassingError).command).toBe('getfd');
    expect((error as Error).message).toContain(`the fd-passing helper ${path} is not built: build it with`);
  });

  it('refuses a helper that others could replace', () => {
    const path = helper('writable', 'exit 0');
    chmodSync(path, 0o775);
    expect(() => checkedFdSender(path, 'add-fd')).toThrow(/QMP command add-fd: the fd-passing helper .* is writable by its group/);
  });

  it('gives a sender for a safe helper', () => {
    const path = helper('safe', 'exit 0');
    expect(checkedFdSender(path, 'getfd').path).toBe(path);
  });
});

describe('defaultFdSender', () => {
  it('checks build/svmm-sendfd once and hands out the same sender afterwards', () => {
    const first = defaultFdSender('getfd');
    expect(first).toBeInstanceOf(NativeFdSender);
    expect((first as NativeFdSender).path).toMatch(/\/build\/svmm-sendfd$/);
    expect(defaultFdSender('add-fd')).toBe(first);
  });
});
