// resolveBinary: the programs run as root are fixed to absolute real paths at createVM, from an
// absolute path or a bare name looked up in the absolute entries of PATH.
import { chmodSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/hypervisor/config/index.ts';
import { resolveBinary } from '../../../src/qemu/binaries.ts';

const FIELD = 'runtime.somePath';

let tmp: string;
let savedPath: string | undefined;

beforeEach(() => {
  // realpath: the results are real paths, whatever tmpdir() is.
  tmp = realpathSync(mkdtempSync(join(tmpdir(), 'svmm-binaries-')));
  savedPath = process.env['PATH'];
});

afterEach(() => {
  if (savedPath === undefined) delete process.env['PATH'];
  else process.env['PATH'] = savedPath;
  rmSync(tmp, { recursive: true, force: true });
});

function file(path: string, mode: number): string {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, '#!/bin/sh\nexit 0\n');
  chmodSync(path, mode);
  return path;
}

function refusal(nameOrPath: string, field = FIELD): ConfigError {
  try {
    resolveBinary(nameOrPath, field);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    const configError = error as ConfigError;
    expect(configError.code).toBe('CONFIG_INVALID');
    expect(configError.paths).toEqual([field]);
    return configError;
  }
  throw new Error(`resolveBinary(${nameOrPath}) did not throw`);
}

describe('resolveBinary with a path', () => {
  it('returns an absolute executable file as it is', () => {
    const prog = file(join(tmp, 'prog'), 0o755);
    expect(resolveBinary(prog, FIELD)).toBe(prog);
  });

  it('accepts an executable that only its owner may execute (root runs it)', () => {
    const prog = file(join(tmp, 'prog'), 0o700);
    expect(resolveBinary(prog, FIELD)).toBe(prog);
  });

  it('resolves a symlink (and a chain of them) to the real file', () => {
    const prog = file(join(tmp, 'real', 'prog'), 0o755);
    symlinkSync(prog, join(tmp, 'link1'));
    symlinkSync('link1', join(tmp, 'link2'));
    expect(resolveBinary(join(tmp, 'link1'), FIELD)).toBe(prog);
    expect(resolveBinary(join(tmp, 'link2'), FIELD)).toBe(prog);
  });

  it('resolves a path through a symlinked directory and dot segments', () => {
    const prog = file(join(tmp, 'real', 'prog'), 0o755);
    symlinkSync(join(tmp, 'real'), join(tmp, 'dirlink'));
    expect(resolveBinary(join(tmp, 'dirlink', 'prog'), FIELD)).toBe(prog);
    expect(resolveBinary(`${tmp}/real/../real/./prog`, FIELD)).toBe(prog);
  });

  it.each(['bin/prog', './prog', '../prog'])('refuses the relative path %s', (path) => {
    expect(refusal(path).message).toBe(`invalid sandbox config: ${FIELD}: must be an absolute path or a bare name found in PATH (got ${path})`);
  });

  it('refuses a relative path even where it would name an executable', () => {
    file(join(tmp, 'prog'), 0o755);
    const cwd = process.cwd();
    process.chdir(tmp);
    try {
      expect(refusal('./prog').issues[0]?.message).toBe('must be an absolute path or a bare name found in PATH (got ./prog)');
    } finally {
      process.chdir(cwd);
    }
  });

  it('refuses a file without execute permission', () => {
    const plain = file(join(tmp, 'plain'), 0o644);
    expect(refusal(plain).issues).toEqual([{ path: FIELD, message: `${plain} is not an executable file` }]);
  });

  it('refuses a directory', () => {
    const dir = join(tmp, 'dir');
    mkdirSync(dir, { mode: 0o755 });
    expect(refusal(dir).issues[0]?.message).toBe(`${dir} is not an executable file`);
  });

  it('refuses a symlink to a directory', () => {
    mkdirSync(join(tmp, 'dir'), { mode: 0o755 });
    symlinkSync(join(tmp, 'dir'), join(tmp, 'dirlink'));
    expect(refusal(join(tmp, 'dirlink')).issues[0]?.message).toBe(`${join(tmp, 'dirlink')} is not an executable file`);
  });

  it('refuses a missing file and a dangling symlink', () => {
    const missing = join(tmp, 'missing');
    expect(refusal(missing).issues[0]?.message).toBe(`${missing} is not an executable file`);
    symlinkSync(missing, join(tmp, 'dangling'));
    expect(refusal(join(tmp, 'dangling')).issues[0]?.message).toBe(`${join(tmp, 'dangling')} is not an executable file`);
  });

  it('names the field it was given', () => {
    expect(refusal(join(tmp, 'missing'), 'runtime.virtiofsdPath').paths).toEqual(['runtime.virtiofsdPath']);
  });
});

describe('resolveBinary with a bare name', () => {
  it('finds it in PATH and returns its real path', () => {
    const bin = join(tmp, 'bin');
    const prog = file(join(tmp, 'real', 'tool'), 0o755);
    mkdirSync(bin);
    symlinkSync(prog, join(bin, 'tool'));
    process.env['PATH'] = bin;
    expect(resolveBinary('tool', FIELD)).toBe(prog);
  });

  it('takes the first PATH entry that has an executable file of that name', () => {
    const a = join(tmp, 'a');
    const b = join(tmp, 'b');
    const c = join(tmp, 'c');
    file(join(a, 'tool'), 0o644);
    mkdirSync(join(b, 'tool'), { recursive: true });
    const wanted = file(join(c, 'tool'), 0o755);
    const later = file(join(tmp, 'd', 'tool'), 0o755);
    process.env['PATH'] = [join(tmp, 'none'), a, b, c, join(later, '..')].join(':');
    expect(resolveBinary('tool', FIELD)).toBe(wanted);
  });

  it('ignores relative PATH entries', () => {
    file(join(tmp, 'rel', 'tool'), 0o755);
    const cwd = process.cwd();
    process.chdir(tmp);
    try {
      process.env['PATH'] = ['rel', '', '.'].join(':');
      expect(refusal('tool').issues[0]?.message).toBe('tool was not found in PATH ()');
      process.env['PATH'] = ['rel', join(tmp, 'rel')].join(':');
      expect(resolveBinary('tool', FIELD)).toBe(join(tmp, 'rel', 'tool'));
    } finally {
      process.chdir(cwd);
    }
  });

  it('refuses a name found nowhere, listing the absolute entries searched', () => {
    const a = join(tmp, 'a');
    const b = join(tmp, 'b');
    mkdirSync(a);
    file(join(b, 'tool'), 0o600);
    process.env['PATH'] = [a, 'relative', b].join(':');
    expect(refusal('tool').message).toBe(`invalid sandbox config: ${FIELD}: tool was not found in PATH (${a}:${b})`);
  });

  it('refuses any name when PATH is unset', () => {
    delete process.env['PATH'];
    expect(refusal('sh').issues[0]?.message).toBe('sh was not found in PATH ()');
  });
});
