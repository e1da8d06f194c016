// How a template's state fd reaches QEMU, per what the schema offers: an fd set and a file: URI, or
// a named fd and an fd: URI (a fake monitor on a real unix socket here, a real file's fd sent).
import { openSync, closeSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../../../src/qmp/index.ts';
import { inheritStateFd, releaseStateFd, sendStateFd, stateChannelOf } from '../../../src/qemu/template/state-channel.ts';
import type { QemuArgv } from '../../../src/qemu/argv/index.ts';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.ts';

let server: FakeQmpServer;
let qmp: QmpClient;
let fd: number;
const signal = new AbortController().signal;
const sent = () => server.received.filter((c) => c.execute !== 'qmp_capabilities').map((c) => [c.execute, c.arguments]);

beforeEach(async () => {
  server = await FakeQmpServer.start();
  qmp = await QmpClient.connect(server.path);
  fd = openSync('/dev/null', 'r');
});
afterEach(async () => {
  closeSync(fd);
  await qmp.close();
  await server.close();
});

describe('template state channel', () => {
  it('is chosen by the schema probe, not the version', () => {
    expect(stateChannelOf({ migrationToFile: true })).toBe('file-fdset');
    expect(stateChannelOf({ migrationToFile: false })).toBe('named-fd');
  });

  it('file-fdset: add-fd, the URI names the set QEMU chose, and release removes the set', async () => {
    server.handle('add-fd', () => ({ 'fdset-id': 7, fd: 33 }));
    server.handle('remove-fd', () => ({}));
    const state = await sendStateFd(qmp, 'file-fdset', fd, signal);
    expect(state).toEqual({ uri: 'file:/dev/fdset/7', fdSet: 7 });
    expect(sent()).toEqual([['add-fd', { opaque: 'svmm-template-state' }]]);
    await releaseStateFd(qmp, state);
    expect(sent().at(-1)).toEqual(['remove-fd', { 'fdset-id': 7 }]);
  });

  it('named-fd: getfd, the URI names the fd, and release sends nothing (the migration took it)', async () => {
    server.handle('getfd', () => ({}));
    const state = await sendStateFd(qmp, 'named-fd', fd, signal);
    expect(state).toEqual({ uri: 'fd:svmm-template-state', fdSet: undefined });
    await releaseStateFd(qmp, state);
    expect(sent()).toEqual([['getfd', { fdname: 'svmm-template-state' }]]);
  });

  it('inherited at spawn: at the next free fd for fd:, or in an fd set after the argv\'s own for file:', () => {
    const argv: Pick<QemuArgv, 'args' | 'fds'> = { args: ['-S', '-add-fd', 'fd=4,set=0', '-add-fd', 'fd=5,set=1'], fds: [{ fd: 3, kind: 'listen', path: '/run/x/qmp.sock' }, { fd: 4, kind: 'inherit', from: 40 }, { fd: 5, kind: 'inherit', from: 41 }] };
    const named = inheritStateFd(argv, 42, 'named-fd');
    expect(named.state).toEqual({ uri: 'fd:6', fdSet: undefined });
    expect(named.argv.args).toEqual(argv.args);
    expect(named.argv.fds.at(-1)).toEqual({ fd: 6, kind: 'inherit', from: 42 });
    const fileSet = inheritStateFd(argv, 42, 'file-fdset');
    expect(fileSet.state).toEqual({ uri: 'file:/dev/fdset/2', fdSet: 2 });
    expect(fileSet.argv.args.slice(-2)).toEqual(['-add-fd', 'fd=6,set=2']);
    expect(fileSet.argv.fds.at(-1)).toEqual({ fd: 6, kind: 'inherit', from: 42 });
    expect(inheritStateFd({ args: ['-S'], fds: [] }, 42, 'file-fdset')).toEqual({ argv: { args: ['-S', '-add-fd', 'fd=3,set=0'], fds: [{ fd: 3, kind: 'inherit', from: 42 }] }, state: { uri: 'file:/dev/fdset/0', fdSet: 0 } });
  });

  it('refuses an fd set that is not a set number: QEMU\'s reply is not put into a URI unchecked', async () => {
    server.handle('add-fd', () => ({ 'fdset-id': '1,evil', fd: 3 }));
    await expect(sendStateFd(qmp, 'file-fdset', fd, signal)).rejects.toMatchObject({ code: 'INVALID_REPLY', command: 'add-fd' });
  });
});
