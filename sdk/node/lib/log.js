// Logging on stderr (stdout carries only the bound addresses), rate-limited per kind.
//
// A client can cause a failure per request (or per slot) as fast as the server answers: the
// first line of a kind in a 10 s window is logged, the rest counted and summed up once.

const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };
export const LOG_LEVELS = Object.keys(LEVELS);

export class Logger {
  /** @param {string} level DEBUG, INFO, WARNING or ERROR @param {(line: string) => void} [write] */
  constructor(level = 'INFO', write = (line) => process.stderr.write(`${line}\n`)) {
    this.threshold = LEVELS[level.toUpperCase()] ?? LEVELS.INFO;
    this.write = write;
    this.window = 10_000;
    this._windows = new Map();
  }

  /** @param {string} level lower case: debug, info, warning, error @param {string} msg */
  log(level, msg) {
    if ((LEVELS[level.toUpperCase()] ?? 0) < this.threshold) return;
    this.write(`${new Date().toISOString()} ${level.toUpperCase()} simgym-node: ${msg}`);
  }

  /** Log `msg` unless a line of the same `kind` was logged in this window. */
  throttled(level, kind, msg) {
    if ((LEVELS[level.toUpperCase()] ?? 0) < this.threshold) return;
    const at = Date.now();
    const win = this._windows.get(kind);
    if (win && at - win.start < this.window) {
      win.held += 1;
      win.last = msg;
      if (win.held === 1) {
        setTimeout(() => this._summarise(kind), win.start + this.window - at).unref();
      }
      return;
    }
    if (this._windows.size > 1024) this._windows.clear();
    this._windows.set(kind, { start: at, held: 0, last: '', level });
    this.log(level, msg);
  }

  _summarise(kind) {
    const win = this._windows.get(kind);
    this._windows.delete(kind);
    if (win?.held) {
      this.log(win.level, `... and ${win.held} more like it in the last ${this.window / 1000} s; the last: ${win.last}`);
    }
  }

  /** Log every pending summary now (at shutdown). */
  flush() {
    for (const kind of [...this._windows.keys()]) this._summarise(kind);
  }
}
