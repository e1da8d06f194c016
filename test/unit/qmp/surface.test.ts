// The QMP surface table (src/qmp/surface.ts) covers what src/ uses that the compiler cannot see:
// commands sent through execute's untyped overload, and events listened for by name. (Commands,
// arguments and result members of QmpCommandMap are held to the table by its type.)
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { QMP_EVENTS, QMP_SURFACE } from '../../../src/qmp/surface.ts';

const SRC = join(import.meta.dirname, '../../../src');

/** The library's own sources, without the mock backend (which emits events, and speaks no QMP). */
function sources(): { file: string; text: string }[] {
  return readdirSync(SRC, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts') && !file.startsWith('mock/'))
    .map((file) => ({ file, text: readFileSync(join(SRC, file), 'utf8') }));
}

function matches(pattern: RegExp): { name: string; file: string }[] {
  return sources().flatMap(({ file, text }) => [...text.matchAll(pattern)].map((m) => ({ name: m[1] ?? m[2] ?? '', file })));
}

/** Events named where something listens for or tells apart an event. */
const EVENT_USE = /(?:waitForEvent|nextEvent|armEvent|\.on|\.once)\([^;]{0,80}?'([A-Z][A-Z0-9_]{2,})'|event\.(?:event|name) [!=]==? '([A-Z][A-Z0-9_]+)'/g;
/** Events the library makes up itself (DEVICE_EJECTED) are not QEMU's. */
const LIBRARY_EVENTS = new Set(['DEVICE_EJECTED']);

describe('the QMP surface table', () => {
  it('names every event src/ listens for', () => {
    const used = matches(EVENT_USE);
    // The scan itself sees the listeners it is there for…
    expect(used.map((u) => u.name)).toEqual(expect.arrayContaining(['DEVICE_DELETED', 'MEMORY_DEVICE_SIZE_CHANGE', 'VSERPORT_CHANGE', 'SHUTDOWN', 'GUEST_PANICKED']));
    // …and each one it sees is in the table.
    expect(used.filter((u) => !LIBRARY_EVENTS.has(u.name) && !Object.hasOwn(QMP_EVENTS, u.name))).toEqual([]);
  });

  it('names every command src/ sends by name, typed or not', () => {
    const sent = matches(/\.execute\(\s*'([^']+)'/g);
    expect(sent.length).toBeGreaterThan(20);
    expect(sent.filter((s) => !Object.hasOwn(QMP_SURFACE, s.name))).toEqual([]);
  });

  it('lists only events src/ listens for', () => {
    const used = new Set(matches(EVENT_USE).map((m) => m.name));
    expect(Object.keys(QMP_EVENTS).filter((name) => !used.has(name))).toEqual([]);
  });
});
