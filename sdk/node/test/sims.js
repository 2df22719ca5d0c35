// Small sims for the kit's tests.

/** x moves by u each step; truncated after `horizon` steps; u = 99 makes step throw. */
export class Toy {
  static simName = 'Toy';
  static states = ['x', { name: 't', low: 0, high: 100, description: 'steps taken' }];
  static actions = [{ name: 'u', low: -1, high: 1 }];
  static config = ['x0', 'horizon'];
  static seedable = true;
  reset(config, seed) {
    this.x = (config.x0 ?? 0) + (seed ?? 0) / 1000;
    this.t = 0;
    this.horizon = config.horizon ?? 5;
    if (config.x0 === 666) throw new RangeError('x0 666 is cursed');
    return { x: this.x, t: this.t };
  }
  step(action) {
    if (action.u === 99) throw new TypeError('boom');
    this.x += action.u;
    this.t += 1;
    return [this.x, this.t];
  }
  truncation() {
    return this.t >= this.horizon;
  }
  termination() {
    return Math.abs(this.x) > 50;
  }
}

/** Like Toy, but every call waits `ms` milliseconds (a sim that awaits something). */
export class SlowToy extends Toy {
  static simName = 'SlowToy';
  static ms = 200;
  reset(config, seed) {
    return new Promise((resolve) => setTimeout(() => resolve(super.reset(config, seed)), SlowToy.ms));
  }
  step(action) {
    return new Promise((resolve, reject) =>
      setTimeout(() => {
        try {
          resolve(super.step(action));
        } catch (exc) {
          reject(exc);
        }
      }, SlowToy.ms)
    );
  }
}

/** Declares no actions (the client names them in Open) and computes its own reward. */
export const Undeclared = {
  simName: 'Undeclared',
  states: ['y'],
  create: () => ({
    y: 0,
    reset() {
      this.y = 0;
      return { y: this.y };
    },
    step(action) {
      this.y += action.a - action.b;
      return { y: this.y === 3 ? NaN : this.y };
    },
    reward() {
      return -Math.abs(this.y);
    },
  }),
};
