// Errors of one request, each bound to the gRPC status code it is reported with.
//
// The codes and messages follow simserver's (simserver/errors.py, sessions.py): a client sees
// the same status for the same situation whichever language serves the sim.

import { status } from '@grpc/grpc-js';

// Client-supplied text quoted in a status is cut to this many characters: a status travels in
// the reply's metadata, and a client refuses metadata over its limit (8 KiB by default).
export const CLIP = 120;

/**
 * `text` cut to `limit` characters, saying how long it was.
 * @param {unknown} text
 * @param {number} [limit]
 */
export function clip(text, limit = CLIP) {
  const s = typeof text === 'string' ? text : Array.isArray(text) ? pyList(text) : String(text);
  if (s.length <= limit) return s;
  return `${s.slice(0, limit)}… (${s.length.toLocaleString('en-US')} chars)`;
}

// Lists are quoted as simserver quotes them (Python's repr of a list of strings).
function pyList(items) {
  return `[${items.map((x) => (typeof x === 'string' ? `'${x}'` : String(x))).join(', ')}]`;
}

/** A failure of one request, reported to the client with `code`. */
export class SimServerError extends Error {
  /** @param {string} message @param {number} [code] */
  constructor(message, code = status.INTERNAL) {
    super(message);
    this.code = code;
  }
}

export class InvalidArgument extends SimServerError {
  constructor(message) {
    super(message, status.INVALID_ARGUMENT);
  }
}

export class Unauthenticated extends SimServerError {
  constructor(message) {
    super(message, status.UNAUTHENTICATED);
  }
}

export class SessionNotFound extends SimServerError {
  constructor(message) {
    super(message, status.NOT_FOUND);
  }
}

export class FailedPrecondition extends SimServerError {
  constructor(message) {
    super(message, status.FAILED_PRECONDITION);
  }
}

export class ResourceExhausted extends SimServerError {
  constructor(message) {
    super(message, status.RESOURCE_EXHAUSTED);
  }
}

export class SessionBusy extends SimServerError {
  constructor(message) {
    super(message, status.ABORTED);
  }
}

/** The simulator itself threw; the message names the call and the exception. */
export class SimCallFailed extends SimServerError {
  /** @param {string} call e.g. "step()" @param {unknown} exc what the sim threw */
  constructor(call, exc) {
    const name = exc instanceof Error ? exc.name || exc.constructor?.name || 'Error' : typeof exc;
    const text = exc instanceof Error ? exc.message : String(exc);
    // The sim's message may quote its input (a config from the client): cut it, longer than
    // client text since it is the one clue to a sim's bug.
    super(`sim ${call} raised ${name}: ${clip(text, 1000)}`, status.INTERNAL);
    this.call = call;
    this.exc = exc;
  }
}

/** A server option that cannot work (one line at start-up, exit 2). */
export class ConfigError extends Error {}
