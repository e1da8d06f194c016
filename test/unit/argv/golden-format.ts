// The golden file format: a comment header, then one QEMU option per line ("-flag value", or the
// flag alone). It is lossless: argsFromGolden(renderGolden(...)) gives the argv back exactly. The
// header lists what QEMU finds at each fd (the argv only says fd=N): a listening socket the launcher
// creates, named relative to the runtime directory, or a caller's fd passed through.
import type { LaunchFd } from '../../../src/qemu/launch/launcher.ts';
import { VALUELESS_FLAGS, splitArgv } from '../../helpers/qemu-options.ts';

export interface GoldenInput {
  name: string;
  description: string;
  args: readonly string[];
  fds: readonly LaunchFd[];
  /** Listening sockets under it are written relative to it. */
  runtimeDir: string;
}

export function renderFds(fds: readonly LaunchFd[], runtimeDir: string): string {
  if (fds.length === 0) return 'none';
  const where = (path: string) => (path.startsWith(`${runtimeDir}/`) ? path.slice(runtimeDir.length + 1) : path);
  return fds.map((entry) => (entry.kind === 'listen' ? `${entry.fd}=listen ${where(entry.path)}` : `${entry.fd}=inherit ${entry.from}`)).join(' ');
}

export function renderGolden({ name, description, args, fds, runtimeDir }: GoldenInput): string {
  const header = [`# ${name}: ${description}`, `# fds: ${renderFds(fds, runtimeDir)}`];
  const lines = splitArgv(args).map(({ flag, raw }) => (raw === undefined ? flag : `${flag} ${raw}`));
  return `${[...header, ...lines].join('\n')}\n`;
}

/** The argv a golden file describes. */
export function argsFromGolden(text: string): string[] {
  const args: string[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.indexOf(' ');
    const flag = space < 0 ? line : line.slice(0, space);
    args.push(flag);
    if (space >= 0) args.push(line.slice(space + 1));
    else if (!VALUELESS_FLAGS.has(flag)) throw new Error(`golden line without a value: ${line}`);
  }
  return args;
}
