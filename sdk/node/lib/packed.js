// The packed engine: runs one PackedRequest on the sessions, for PackedStream and the packed
// socket alike (simserver/packed.py is its Python twin; the rules are in simulator.proto).
//
// Slots run in request order. A failing slot becomes a PackedError and a NaN row; the others
// are unaffected. A malformed request (arrays that do not fit its sessions) throws before any
// slot runs, which ends the stream. Synchronous sims run in one synchronous loop; the first slot
// whose sim returns a Promise turns the rest of the request asynchronous (still in order).

import { status } from '@grpc/grpc-js';
import { InvalidArgument, ResourceExhausted, SimServerError } from './errors.js';
import { has, structToObject, toNumber } from './proto.js';

const isThenable = (x) => x != null && typeof x.then === 'function';

/**
 * Check a request's arrays against its K sessions.
 * @returns {{width: number, seqs: number[], resets: Map<number, object>}}
 */
export function slotsOf(request, maxSlots) {
  const count = request.session_ids.length;
  if (count > maxSlots) {
    throw new ResourceExhausted(
      `the request has ${count} slots; this server takes at most ${maxSlots} per request ` +
        '(--max-slots): send fewer sessions per request'
    );
  }
  const timeout = request.slot_timeout_seconds;
  if (!(timeout >= 0 && Number.isFinite(timeout))) {
    throw new InvalidArgument(
      `slot_timeout_seconds is ${pyNumber(timeout)}: give a positive number of seconds, or 0 for none`
    );
  }
  const seqs = request.seqs.length ? request.seqs.map(toNumber) : new Array(count).fill(0);
  if (seqs.length !== count) {
    throw new InvalidArgument(
      `seqs has ${seqs.length} value(s) for ${count} session(s); send one per session (or none)`
    );
  }
  const resets = new Map();
  if (count === 0) {
    if (request.actions.length || request.resets.length) {
      throw new InvalidArgument('actions or resets given for no session_ids');
    }
    return { width: 0, seqs, resets };
  }
  const width = Math.floor(request.actions.length / count);
  if (request.actions.length % count) {
    throw new InvalidArgument(
      `actions has ${request.actions.length} value(s) for ${count} session(s): not a whole ` +
        'number of values per session'
    );
  }
  for (const r of request.resets) {
    if (r.slot >= count) {
      throw new InvalidArgument(`resets names slot ${r.slot}; the request has ${count} session(s)`);
    }
    if (resets.has(r.slot)) throw new InvalidArgument(`resets names slot ${r.slot} twice`);
    resets.set(r.slot, r);
  }
  return { width, seqs, resets };
}

/**
 * Run the slots of a packed request.
 * @param {import('./sessions.js').SessionManager} sessions
 * @param {object} request a decoded PackedRequest
 * @param {(call: string, sessionId: string, exc: SimServerError) => void} [onFailure]
 * @returns {object|Promise<object>} the PackedReply (a plain object protobufjs encodes)
 * @throws {SimServerError} the request is malformed (nothing was run)
 */
export function run(sessions, request, onFailure) {
  const { width, seqs, resets } = slotsOf(request, sessions.maxSlots);
  const ids = request.session_ids;
  const actions = request.actions;
  const S = sessions.stateWidth;
  const reply = {
    state_width: S,
    states: [],
    terminated: [],
    truncated: [],
    steps: [],
    sim_seconds: [],
    rewards: null,
    nonfinite: [],
    errors: [],
  };

  const start = (k) => {
    const r = resets.get(k);
    if (r !== undefined) {
      const seed = has(r, 'seed') ? toNumber(r.seed) : undefined;
      return sessions.reset(ids[k], structToObject(r.config), seed, seqs[k]);
    }
    const row = width === 1 ? [actions[k]] : actions.slice(k * width, (k + 1) * width);
    return sessions.step(ids[k], row, seqs[k]);
  };

  const fail = (k, exc) => {
    if (!(exc instanceof SimServerError)) throw exc;
    onFailure?.(resets.has(k) ? 'reset' : 'step', ids[k], exc);
    reply.errors.push({ slot: k, code: exc.code ?? status.INTERNAL, message: exc.message });
    return null;
  };

  const add = (k, result) => {
    if (result === null) {
      // A failed slot: NaN states (not listed as nonfinite), false flags, no reward.
      for (let i = 0; i < S; i++) reply.states.push(NaN);
      reply.terminated.push(false);
      reply.truncated.push(false);
      reply.steps.push(0);
      reply.sim_seconds.push(0);
      if (reply.rewards !== null) reply.rewards.push(NaN);
      return;
    }
    const out = result.outcome;
    const base = k * S;
    for (const i of out.nonfinite) reply.nonfinite.push(base + i);
    for (let i = 0; i < out.states.length; i++) reply.states.push(out.states[i]);
    reply.terminated.push(out.terminated);
    reply.truncated.push(out.truncated);
    reply.steps.push(result.step);
    reply.sim_seconds.push(out.simSeconds);
    if (out.reward !== undefined) {
      // The first slot with a sim reward: the earlier ones had none.
      if (reply.rewards === null) reply.rewards = new Array(k).fill(NaN);
      reply.rewards.push(out.reward);
    } else if (reply.rewards !== null) {
      reply.rewards.push(NaN);
    }
  };

  const finish = () => {
    if (reply.rewards === null) reply.rewards = [];
    return reply;
  };

  // Synchronous until a sim returns a Promise; from that slot on, asynchronous, in order.
  const from = (first) => {
    for (let k = first; k < ids.length; k++) {
      let result;
      try {
        result = start(k);
      } catch (exc) {
        add(k, fail(k, exc));
        continue;
      }
      if (isThenable(result)) {
        return result.then(
          (value) => add(k, value),
          (exc) => add(k, fail(k, exc))
        ).then(() => from(k + 1));
      }
      add(k, result);
    }
    return finish();
  };
  return from(0);
}

function pyNumber(x) {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  return String(x);
}
