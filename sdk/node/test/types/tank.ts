// A TypeScript sim against the kit's declarations (lib/index.d.ts): type-checked by npm test
// (test/types.test.js), never run. The @ts-expect-error lines must stay errors: a declaration
// that stopped catching them would fail the check.
import { SimServer, main, type Config, type Sim } from '../../lib/index.js';

class Tank {
  static simName = 'Tank';
  static states = ['level', { name: 'inflow', low: 0, high: 5, description: 'm³/min' }];
  static actions = [{ name: 'valve', low: 0, high: 1 }, { name: 'pump', values: [0, 1] }];
  static config = ['initial_level'];
  static seedable = true;
  level = 0;
  t = 0;

  reset(config: Config, seed?: number) {
    this.level = Number(config.initial_level ?? 1) + (seed ?? 0) * 0;
    this.t = 0;
    return { level: this.level, inflow: 0 };
  }

  async step(action: Record<string, number>) {
    this.level += action.valve + action.pump - 0.1;
    this.t += 1;
    return [this.level, action.valve];
  }

  termination() {
    return this.level > 10;
  }

  truncated = false;
}

const asDescriptor: Sim = {
  states: ['x'],
  create: () => ({ reset: () => ({ x: 0 }), step: () => [1] }),
};

export async function serveBoth(): Promise<string[]> {
  const server = new SimServer(Tank, { port: 0, maxSessions: 8, token: 'secret' });
  const addresses = await server.start();
  await server.stop(1);
  await main(asDescriptor, ['--port', '0']);
  return addresses;
}

class NoStep {
  static states = ['x'];
  reset() {
    return { x: 0 };
  }
}
// @ts-expect-error a sim needs step(action)
new SimServer(NoStep);
// @ts-expect-error states are numbers (or booleans), not strings
const badStates: Sim = { states: ['x'], create: () => ({ reset: () => ({ x: 'high' }), step: () => [1] }) };
// @ts-expect-error options are simserver's, camel-cased
new SimServer(Tank, { max_sessions: 8 });
void badStates;
