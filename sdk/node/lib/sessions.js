// Sessions: one sim instance each, leases, the session limit and the retry rule.
//
// The same rules and messages as simserver/sessions.py, without its threads: Node runs every
// sim call on its one event loop, so a synchronous sim call needs no lock. A sim whose call
// returns a Promise keeps its session busy until it settles (another call on it: ABORTED).
// Such a call still running past its client's deadline plus `hungGrace` is taken as hung: the
// session leaves the table (its id then gets NOT_FOUND, and it stops counting against
// maxSessions) and its sim is closed when the call settles.
//
// Every method returns the result, or a Promise of it when the sim's call is asynchronous, and
// throws (or rejects with) a SimServerError.

import { randomUUID } from 'node:crypto';
import {
  FailedPrecondition,
  InvalidArgument,
  ResourceExhausted,
  SessionBusy,
  SessionNotFound,
  SimCallFailed,
  SimServerError,
  clip,
} from './errors.js';
import { SimInstance } from './sim.js';

const isThenable = (x) => x != null && typeof x.then === 'function';
// A call without a client deadline (a stream's message) is taken as hung after this long.
const NO_DEADLINE_LIMIT = 3600;

/**
 * @typedef {{id: string, sim: SimInstance, actionNames: string[], lease: number, client: string,
 *   lastUsed: number, running: boolean, steps: number, seq: number, lastResult: object|null,
 *   busyCall: string, busySince: number, hungAt: number, abandoned: boolean}} Session
 */

export class SessionManager {
  /**
   * @param {import('./sim.js').SimDescription} desc
   * @param {{maxSessions?: number, leaseSeconds?: number, maxLeaseSeconds?: number,
   *   hungGrace?: number, maxSlots?: number, log?: (level: string, msg: string) => void}} [o]
   */
  constructor(desc, o = {}) {
    this.desc = desc;
    this.maxSessions = o.maxSessions ?? 64;
    this.leaseSeconds = o.leaseSeconds ?? 300;
    this.maxLeaseSeconds = Math.max(o.maxLeaseSeconds ?? this.leaseSeconds, this.leaseSeconds);
    this.hungGrace = o.hungGrace ?? 30;
    this.maxSlots = o.maxSlots ?? Math.max(1024, 4 * this.maxSessions);
    this.log = o.log ?? (() => {});
    /** @type {Map<string, Session>} */
    this.sessions = new Map();
    this.stats = { opened: 0, closed: 0, expired: 0, hung: 0, simErrors: 0, steps: 0 };
    this.stateWidth = desc.states.length;
    this._declaredActions = desc.actions.map((v) => v.name);
    this._configKeys = new Set(desc.config.map((v) => v.name));
    this._reaper = null;
  }

  /** Start the timer that closes sessions past their lease (and lets hung ones go). */
  startReaper(intervalSeconds) {
    const period = intervalSeconds ?? Math.max(0.05, Math.min(5, this.leaseSeconds / 4));
    this._reaper = setInterval(() => this.reap(), period * 1000);
    this._reaper.unref();
  }

  /**
   * Create a session.
   * @param {string[]} actionNames what the client sends (used when the sim declares none)
   * @param {number} lease seconds asked for; 0: the server's default
   * @param {string} client for logs
   * @returns {Session}
   */
  open(actionNames, lease, client) {
    const actions = this._resolveActions([...actionNames]);
    // NaN would never expire; a negative lease means nothing. +Infinity asks for "as long as
    // allowed": capped below like any lease over the server's maximum.
    if (Number.isNaN(lease) || lease < 0) {
      throw new InvalidArgument(
        `lease_seconds is ${pyFloat(lease)}: give a positive number of seconds, or 0 for the ` +
          "server's default"
      );
    }
    if (this.sessions.size >= this.maxSessions) {
      throw new ResourceExhausted(
        `session limit reached (${this.maxSessions} open); close sessions or start the server ` +
          'with a larger --max-sessions'
      );
    }
    let sim;
    try {
      sim = new SimInstance(this.desc, actions);
    } catch (exc) {
      throw exc instanceof SimServerError ? exc : new SimCallFailed('constructor', exc);
    }
    const granted = lease === 0 ? this.leaseSeconds : Math.min(lease, this.maxLeaseSeconds);
    const session = {
      id: randomUUID().replaceAll('-', ''),
      sim,
      actionNames: actions,
      lease: granted,
      client,
      lastUsed: now(),
      running: false,
      steps: 0,
      seq: 0,
      lastResult: null,
      busyCall: '',
      busySince: 0,
      hungAt: Infinity,
      abandoned: false,
    };
    this.sessions.set(session.id, session);
    this.stats.opened += 1;
    this.log('info', `opened session ${session.id.slice(0, 8)} for ${client || '?'} (${this.sessions.size} open)`);
    return session;
  }

  _resolveActions(requested) {
    const declared = this._declaredActions;
    if (declared.length) {
      if (requested.length && !sameList(requested, declared)) {
        if (sameList([...requested].sort(), [...declared].sort())) return declared;
        throw new InvalidArgument(
          `client actions ${clip(requested)} do not match the sim's actions ${clip(declared)}`
        );
      }
      return declared;
    }
    if (!requested.length) {
      throw new InvalidArgument(
        'the sim does not declare its action names: send them in Open.action_names ' +
          '(gymclient does this from the spec) or declare them on the sim (static actions)'
      );
    }
    if (new Set(requested).size !== requested.length) {
      throw new InvalidArgument(`duplicate action names in ${clip(requested)}`);
    }
    return requested;
  }

  /** A live session, or NOT_FOUND. */
  get(sessionId) {
    const session = this.sessions.get(sessionId);
    if (session === undefined) {
      throw new SessionNotFound(
        `unknown session ${sessionId.slice(0, 8) || '<empty>'}: it was closed, expired ` +
          'after its lease (or its sim hung for longer), or the server restarted; open a new one'
      );
    }
    return session;
  }

  /** Close a session (idempotent); a call still running in it closes its sim when it settles. */
  close(sessionId) {
    const session = this.sessions.get(sessionId);
    if (session === undefined) return;
    this.sessions.delete(sessionId);
    this.stats.closed += 1;
    session.abandoned = true;
    if (!session.busyCall) this._dispose(session);
  }

  /** Close every session (shutdown). */
  closeAll() {
    if (this._reaper) clearInterval(this._reaper);
    for (const id of [...this.sessions.keys()]) this.close(id);
  }

  _dispose(session) {
    try {
      session.sim.close();
    } catch (exc) {
      this.log('warning', `closing session ${session.id.slice(0, 8)}: ${exc}`);
    }
  }

  /** Close sessions idle past their lease; let go of hung ones. Returns how many expired. */
  reap(at = now()) {
    let expired = 0;
    for (const session of [...this.sessions.values()]) {
      if (session.busyCall) {
        if (at > session.hungAt) {
          this.sessions.delete(session.id);
          session.abandoned = true;
          this.stats.hung += 1;
          this.log(
            'warning',
            `session ${session.id.slice(0, 8)}: sim ${session.busyCall} is hung (running ` +
              `${(at - session.busySince).toFixed(0)} s); its session is let go and its sim ` +
              'closed when the call returns'
          );
        }
        continue;
      }
      if (at - session.lastUsed > session.lease) {
        this.sessions.delete(session.id);
        session.abandoned = true;
        this.stats.expired += 1;
        expired += 1;
        this._dispose(session);
        this.log('info', `session ${session.id.slice(0, 8)} expired after its ${session.lease} s lease`);
      }
    }
    return expired;
  }

  _enter(session, call, deadline) {
    if (session.busyCall) {
      const running = (now() - session.busySince).toFixed(1);
      throw new SessionBusy(
        `session ${session.id.slice(0, 8)} is busy: sim ${session.busyCall} has been running ` +
          `for ${running} s (a hung sim?); open a new session`
      );
    }
    const t = now();
    session.busyCall = call;
    session.busySince = t;
    session.hungAt = deadline == null ? t + NO_DEADLINE_LIMIT : t + deadline + this.hungGrace;
  }

  _leave(session) {
    session.busyCall = '';
    session.lastUsed = now();
    if (session.abandoned) this._dispose(session);
  }

  /**
   * Run `body` with the session marked busy, settled sync or async.
   * @template T
   * @param {Session} session @param {string} call @param {number|null} deadline
   * @param {() => T|Promise<T>} body
   * @returns {T|Promise<T>}
   */
  _within(session, call, deadline, body) {
    this._enter(session, call, deadline);
    let result;
    try {
      result = body();
    } catch (exc) {
      this._leave(session);
      throw exc;
    }
    if (!isThenable(result)) {
      this._leave(session);
      return result;
    }
    return result.finally(() => this._leave(session));
  }

  /**
   * Start an episode.
   * @param {string} sessionId @param {Record<string, unknown>} config
   * @param {number|undefined} seed @param {number} seq
   * @param {number|null} [deadline] seconds the client waits (null: none)
   */
  reset(sessionId, config, seed, seq, deadline = null) {
    const session = this._resetSession(sessionId, config);
    return this._within(session, 'reset()', deadline, () => {
      if (seq && seq === session.seq && session.lastResult !== null) return session.lastResult;
      session.running = false;
      const done = (outcome) => {
        session.steps = 0;
        session.running = !(outcome.terminated || outcome.truncated);
        const result = { outcome, step: 0 };
        session.seq = seq;
        session.lastResult = result;
        return result;
      };
      return this._call(() => session.sim.reset(config, seed), done);
    });
  }

  _resetSession(sessionId, config) {
    const session = this.get(sessionId);
    if (this._configKeys.size) {
      const unknown = Object.keys(config).filter((k) => !this._configKeys.has(k)).sort();
      if (unknown.length) {
        throw new InvalidArgument(
          `unknown config key(s) ${clip(unknown)}; the sim accepts ${clip([...this._configKeys].sort())}`
        );
      }
    }
    const bad = nonfiniteKey(config, '');
    if (bad) throw new InvalidArgument(`config ${clip(bad, 80)} is not finite; config values must be`);
    return session;
  }

  _stepSession(sessionId, action) {
    const session = this.sessions.get(sessionId) ?? this.get(sessionId);
    const names = session.actionNames;
    if (action.length !== names.length) {
      throw new InvalidArgument(
        `action has ${action.length} value(s); this session expects ${names.length}: ${clip(names)}`
      );
    }
    for (let i = 0; i < action.length; i++) {
      if (!Number.isFinite(action[i])) {
        throw new InvalidArgument(`action '${names[i]}' is ${pyFloat(action[i])}; actions must be finite`);
      }
    }
    return session;
  }

  /**
   * Advance a session by one step.
   * @param {string} sessionId @param {ArrayLike<number>} action @param {number} seq
   * @param {number|null} [deadline]
   */
  step(sessionId, action, seq, deadline = null) {
    const session = this._stepSession(sessionId, action);
    return this._within(session, 'step()', deadline, () => {
      if (seq && seq === session.seq && session.lastResult !== null) return session.lastResult;
      if (!session.running) {
        throw new FailedPrecondition(
          'no episode is running in this session: call Reset first ' +
            '(after a terminated/truncated step or a sim error, reset again)'
        );
      }
      const done = (outcome) => {
        session.steps += 1;
        this.stats.steps += 1;
        if (outcome.terminated || outcome.truncated) session.running = false;
        const result = { outcome, step: session.steps };
        session.seq = seq;
        session.lastResult = result;
        return result;
      };
      const failed = () => {
        // The sim's state is unknown after it threw: the episode is over.
        session.running = false;
      };
      return this._call(() => session.sim.step(action), done, failed);
    });
  }

  /** Call the sim; `done` maps its outcome; a failure counts and calls `failed`. */
  _call(fn, done, failed) {
    const onError = (exc) => {
      if (exc instanceof SimCallFailed) {
        this.stats.simErrors += 1;
        failed?.();
      }
      throw exc;
    };
    let out;
    try {
      out = fn();
    } catch (exc) {
      onError(exc);
    }
    if (!isThenable(out)) return done(out);
    return out.then(done, onError);
  }

  /** The session's current states. */
  states(sessionId) {
    const session = this.get(sessionId);
    if (session.lastResult === null || session.sim.last === null) {
      throw new FailedPrecondition('no states yet: call Reset first');
    }
    if (session.busyCall) this._enter(session, 'states()', null); // throws ABORTED
    session.lastUsed = now();
    return session.sim.last;
  }

  /** The session's terminated/truncated flags. */
  termination(sessionId) {
    const session = this.get(sessionId);
    if (session.busyCall) this._enter(session, 'termination()', null); // throws ABORTED
    session.lastUsed = now();
    return [session.sim._flag('termination', 'terminated'), session.sim._flag('truncation', 'truncated')];
  }
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The path of the first NaN or infinite number in a config ('' if none). */
export function nonfiniteKey(value, path) {
  if (typeof value === 'number') return Number.isFinite(value) ? '' : path || 'value';
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const bad = nonfiniteKey(value[i], `${path}[${i}]`);
      if (bad) return bad;
    }
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      const bad = nonfiniteKey(item, path ? `${path}.${key}` : key);
      if (bad) return bad;
    }
  }
  return '';
}

/** A number as Python prints a float (nan, inf), so messages read as simserver's. */
export function pyFloat(x) {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  return Number.isInteger(x) ? x.toFixed(1) : String(x);
}

function now() {
  return performance.now() / 1000;
}
