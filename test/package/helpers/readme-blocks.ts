// The ```ts blocks of a Markdown file, each with what it needs to compile on its own. A block may
// be preceded by one HTML comment (invisible on the rendered page, read here):
//   <!-- checked with: declare const logger: Logger; … -->   declarations of the identifiers the
//                                                             block uses but does not define
//   <!-- not checked: <reason> -->                           a fragment that cannot compile alone
// Nothing else between the comment and the fence.

export interface CodeBlock {
  /** The 1-based line of the opening fence in the Markdown file. */
  line: number;
  code: string;
  /** TypeScript put before the block: the declarations it assumes. */
  prelude: string;
  /** Why the block is not type-checked; undefined when it is. */
  skipReason?: string;
}

/** The HTML comment right before a fence, if any, without its `<!--` and `-->`. */
function commentBefore(text: string): string | undefined {
  const tail = text.trimEnd();
  if (!tail.endsWith('-->')) return undefined;
  return tail.slice(tail.lastIndexOf('<!--') + '<!--'.length, -'-->'.length).trim();
}

export function typeScriptBlocks(markdown: string): CodeBlock[] {
  const lines = markdown.split('\n');
  const blocks: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^(\s*)(`{3,})(\S*)/.exec(lines[i] ?? '');
    if (!fence) continue;
    const [, , ticks = '```', lang] = fence;
    const end = lines.findIndex((text, j) => j > i && text.trim() === ticks);
    if (end === -1) throw new Error(`the code block at line ${i + 1} is never closed`);
    if (lang === 'ts' || lang === 'typescript') {
      const comment = commentBefore(lines.slice(0, i).join('\n')) ?? '';
      const prelude = /^checked with:([\s\S]*)$/.exec(comment)?.[1]?.trim() ?? '';
      const skipReason = /^not checked:([\s\S]*)$/.exec(comment)?.[1]?.trim();
      blocks.push({ line: i + 1, code: lines.slice(i + 1, end).join('\n'), prelude, ...(skipReason === undefined ? {} : { skipReason }) });
    }
    i = end;
  }
  return blocks;
}
