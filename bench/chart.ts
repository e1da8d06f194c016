// A bar chart of one benchmark's figures on one QEMU, as SVG: two bars a figure (the first side in
// blue, the second in grey) with their medians and ratio.
import type { Comparison } from './stats.ts';

/** `rows`: figure name → its comparison; `title` says what the two sides are. */
export function barChart(title: string, rows: Record<string, Comparison>): string {
  const entries = Object.entries(rows);
  const width = 860;
  const rowHeight = 34;
  const labelWidth = 330;
  const height = 50 + entries.length * rowHeight;
  const maxMs = Math.max(...entries.flatMap(([, c]) => [c.libMs, c.rawMs]));
  const scale = (ms: number) => (ms / maxMs) * (width - labelWidth - 200);
  const bars = entries
    .map(([name, c], i) => {
      const y = 40 + i * rowHeight;
      return [
        `<text x="10" y="${y + 16}" font-size="12">${escapeXml(name)}</text>`,
        `<rect x="${labelWidth}" y="${y}" width="${scale(c.libMs).toFixed(1)}" height="12" fill="#3b6ea5"/>`,
        `<rect x="${labelWidth}" y="${y + 13}" width="${scale(c.rawMs).toFixed(1)}" height="12" fill="#b0b0b0"/>`,
        `<text x="${(labelWidth + 5 + scale(Math.max(c.libMs, c.rawMs))).toFixed(1)}" y="${y + 18}" font-size="11">${c.libMs.toFixed(0)} / ${c.rawMs.toFixed(0)} ms (×${c.ratio.toFixed(2)})</text>`,
      ].join('');
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">
<text x="10" y="20" font-size="14" font-weight="bold">${escapeXml(title)}</text>
${bars}
</svg>
`;
}

function escapeXml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}
