// What a JavaScript sim looks like to the kit, and the adapter that drives one instance.
//
// A sim is a class (or a descriptor object with a `create()` function) that declares its names:
//
//   class Tank {
//     static simName = 'Tank';                       // default: the class's name
//     static states = ['level', {name: 'inflow', low: 0, high: 5, description: 'm³/min'}];
//     static actions = [{name: 'valve', low: 0, high: 1}];   // or {name: 'gear', values: [1, 2, 3]}
//     static config = ['initial_level'];             // optional: empty lets any key through
//     static seedable = true;                        // reset(config, seed) honours the seed
//     reset(config, seed) { ...; return {level: 1, inflow: 0}; }   // or an array, states order
//     step(action) { ...action.valve...; return {...}; }            // action: {name: value}
//     termination() { return false; }                // optional (a method or a boolean field)
//     truncation() { return this.t >= 100; }         // optional
//     reward() { return undefined; }                 // optional: a reward of the sim's own
//     close() {}                                     // optional: the session ended
//   }
//
// reset and step may also return a Promise (a sim that waits on something): the session is
// busy until it settles, and other calls on it get ABORTED, as in simserver.

import { InvalidArgument, SimCallFailed } from './errors.js';

/**
 * @typedef {{name: string, low?: number, high?: number, description?: string}} Variable
 * @typedef {{simName: string, states: Variable[], actions: Variable[], config: Variable[],
 *   seedable: boolean, create: () => object}} SimDescription
 */

function variables(list, what, owner) {
  if (list == null) return [];
  if (!Array.isArray(list)) throw new TypeError(`${owner}.${what} must be an array of names`);
  const seen = new Set();
  return list.map((item, i) => {
    const v = typeof item === 'string' ? { name: item } : { ...item };
    if (typeof v.name !== 'string' || !v.name) {
      throw new TypeError(`${owner}.${what}[${i}]: give a name (a string, or {name, low, high})`);
    }
    if (seen.has(v.name)) throw new TypeError(`${owner}.${what}: ${v.name} is listed twice`);
    seen.add(v.name);
    for (const bound of ['low', 'high']) {
      if (v[bound] != null && typeof v[bound] !== 'number') {
        throw new TypeError(`${owner}.${what}.${v.name}.${bound} must be a number`);
      }
    }
    if (v.values != null) {
      // A discrete action's values (Variable.values): low/high are their least and greatest.
      if (!Array.isArray(v.values) || !v.values.length || !v.values.every(Number.isFinite)) {
        throw new TypeError(`${owner}.${what}.${v.name}.values must be a non-empty array of numbers`);
      }
      v.low ??= Math.min(...v.values);
      v.high ??= Math.max(...v.values);
    }
    return v;
  });
}

/**
 * A sim class or descriptor as the kit uses it.
 * @param {Function|object} sim
 * @returns {SimDescription}
 */
export function describeSim(sim) {
  const isClass = typeof sim === 'function';
  const owner = (isClass ? sim.name : sim?.simName || sim?.name) || 'sim';
  if (!isClass && typeof sim?.create !== 'function') {
    throw new TypeError('a sim is a class, or an object with a create() function');
  }
  const states = variables(sim.states, 'states', owner);
  if (!states.length) throw new TypeError(`${owner}.states: declare the sim's state names`);
  const proto = isClass ? sim.prototype : null;
  if (proto && (typeof proto.reset !== 'function' || typeof proto.step !== 'function')) {
    throw new TypeError(`${owner} cannot be hosted: it needs reset(config, seed) and step(action)`);
  }
  return {
    simName: String(sim.simName || owner),
    states,
    actions: variables(sim.actions, 'actions', owner),
    config: variables(sim.config, 'config', owner),
    seedable: sim.seedable ?? (proto ? proto.reset.length >= 2 : false),
    create: isClass ? () => new sim() : () => sim.create(),
  };
}

const isThenable = (x) => x != null && typeof x.then === 'function';

/**
 * Drives one sim instance: calls it, turns what it returns into an outcome.
 *
 * An outcome is {states: number[], terminated, truncated, nonfinite: number[], reward,
 * simSeconds}. `reset`/`step` return it, or a Promise of it when the sim's call did.
 */
export class SimInstance {
  /** @param {SimDescription} desc @param {string[]} actionNames */
  constructor(desc, actionNames) {
    this.names = desc.states.map((v) => v.name);
    this.actionNames = actionNames;
    // Discrete actions: a client that does not know their values sends any number, which is
    // rounded to the nearest value (the contract's promise, Variable.values).
    const declared = new Map(desc.actions.map((v) => [v.name, v.values]));
    this.discrete = actionNames
      .map((name, i) => [i, declared.get(name)])
      .filter(([, values]) => values != null && values.length);
    this.sim = desc.create();
    this.last = null; // the last states array (what States returns)
    this.hasReward = typeof this.sim.reward === 'function';
  }

  reset(config, seed) {
    const started = performance.now();
    let result;
    try {
      result = this.sim.reset(config, seed);
    } catch (exc) {
      throw failure('reset()', exc);
    }
    return this._settle(result, 'reset()', started);
  }

  /** @param {ArrayLike<number>} action values in actionNames order */
  step(action) {
    const names = this.actionNames;
    const named = {};
    for (let i = 0; i < names.length; i++) named[names[i]] = action[i];
    for (const [i, values] of this.discrete) named[names[i]] = nearest(values, action[i]);
    const started = performance.now();
    let result;
    try {
      result = this.sim.step(named);
    } catch (exc) {
      throw failure('step()', exc);
    }
    return this._settle(result, 'step()', started);
  }

  _settle(result, call, started) {
    if (!isThenable(result)) return this._outcome(result, call, started);
    return Promise.resolve(result).then(
      (value) => this._outcome(value, call, started),
      (exc) => {
        throw failure(call, exc);
      }
    );
  }

  _outcome(result, call, started) {
    const simSeconds = (performance.now() - started) / 1000;
    const states = this._states(result, call);
    const terminated = this._flag('termination', 'terminated');
    const truncated = this._flag('truncation', 'truncated');
    let reward;
    if (this.hasReward) {
      try {
        reward = this.sim.reward();
      } catch (exc) {
        throw new SimCallFailed('reward()', exc);
      }
      if (reward != null && typeof reward !== 'number') {
        throw new SimCallFailed('reward()', new TypeError(`returned ${typeof reward}, not a number`));
      }
    }
    const nonfinite = [];
    for (let i = 0; i < states.length; i++) if (!Number.isFinite(states[i])) nonfinite.push(i);
    this.last = states;
    return { states, terminated, truncated, nonfinite, reward: reward ?? undefined, simSeconds };
  }

  _states(result, call) {
    const names = this.names;
    const out = new Array(names.length);
    if (Array.isArray(result) || ArrayBuffer.isView(result)) {
      if (result.length !== names.length) {
        throw new SimCallFailed(
          call,
          new TypeError(`returned ${result.length} states; the sim declares ${names.length}`)
        );
      }
      for (let i = 0; i < names.length; i++) out[i] = number(result[i], names[i], call);
      return out;
    }
    if (result == null || typeof result !== 'object') {
      throw new SimCallFailed(
        call,
        new TypeError(`returned ${result === null ? 'null' : typeof result}; expected the states`)
      );
    }
    for (let i = 0; i < names.length; i++) {
      const value = result[names[i]];
      if (value === undefined) {
        throw new SimCallFailed(call, new TypeError(`no value for state '${names[i]}'`));
      }
      out[i] = number(value, names[i], call);
    }
    return out;
  }

  _flag(method, field) {
    const sim = this.sim;
    const fn = sim[method];
    if (typeof fn === 'function') {
      try {
        return Boolean(fn.call(sim));
      } catch (exc) {
        throw new SimCallFailed(`${method}()`, exc);
      }
    }
    return Boolean(sim[field]);
  }

  close() {
    if (typeof this.sim.close === 'function') this.sim.close();
  }
}

function nearest(values, x) {
  let best = values[0];
  for (const v of values) if (Math.abs(v - x) < Math.abs(best - x)) best = v;
  return best;
}

function number(value, name, call) {
  if (typeof value === 'number') return value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  throw new SimCallFailed(call, new TypeError(`state '${name}' is ${typeof value}, not a number`));
}

function failure(call, exc) {
  // An InvalidArgument a sim raises on purpose (a config it refuses) keeps its code.
  return exc instanceof InvalidArgument ? exc : new SimCallFailed(call, exc);
}
