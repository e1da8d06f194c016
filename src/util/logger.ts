import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/** The library logs nothing unless the embedding application injects a logger. */
export const silentLogger: Logger = pino({ level: 'silent' });
