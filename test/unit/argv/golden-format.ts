// The golden file format: a comment header, then one QEMU option per line ("-flag value", or the
// flag alone). It is lossless: argsFromGolden(renderGolden(...)) gives the argv back exactly.
import { VALUELESS_FLAGS, splitArgv } from '../../helpers/qemu-options.ts';

export interface GoldenInput {
  name: string;
  description: string;
  args: readonly string[];
  passFds: readonly number[];
}

export function renderGolden({ name, description, args, passFds }: GoldenInput): string {
  const header = [`# ${name}: ${description}`, `# passFds: ${passFds.length > 0 ? passFds.join(' ') : 'none'}`];
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
