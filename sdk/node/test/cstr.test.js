// The JS CSTR reproduces the Python sample's golden trajectories (tests/data/cstr_golden.json:
// the public reference's states after reset and after each step, noise 0).
//
// Tolerances: tests/test_cstr_golden.py's for the Python fast sim against the same data (5e-6
// relative, 1e-6 absolute: the golden data's own integration error), flags identical.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { CSTR } from '../sample/cstr.js';
import { PyRandom } from '../sample/random.js';

const GOLDEN = new URL('../../../tests/data/cstr_golden.json', import.meta.url);
const CASES = JSON.parse(readFileSync(GOLDEN, 'utf8')).cases;
const RTOL = 5e-6;
const ATOL = 1e-6;

function run(sim, config, actions, seed) {
  const rows = [{ ...sim.reset(config, seed), terminated: false, truncated: false }];
  for (const a of actions) {
    const states = sim.step({ Tc_adjust: a });
    rows.push({ ...states, terminated: sim.termination(), truncated: sim.truncation() });
    if (sim.termination() || sim.truncation()) break;
  }
  return rows;
}

test('golden data: 20 reference trajectories', () => {
  assert.equal(CASES.length, 20);
});

for (const [i, c] of CASES.entries()) {
  test(`golden trajectory ${i}: ${JSON.stringify(c.config)} ${c.actions_name}`, () => {
    const got = run(new CSTR(), c.config, c.actions);
    assert.equal(got.length, c.trajectory.length, 'episode length');
    for (const [k, want] of c.trajectory.entries()) {
      for (const [name, value] of Object.entries(want)) {
        const have = got[k][name];
        if (typeof value === 'boolean') {
          assert.equal(have, value, `row ${k} ${name}`);
          continue;
        }
        const err = Math.abs(have - value);
        assert.ok(err <= ATOL + RTOL * Math.abs(value), `row ${k} ${name}: ${have} vs ${value}`);
      }
    }
  });
}

test('a seeded noisy episode repeats; another seed differs', () => {
  const config = { Cref_signal: 2, noise_percentage: 5 };
  const actions = Array.from({ length: 30 }, (_, k) => Math.sin(k) * 3);
  const a = run(new CSTR(), config, actions, 7);
  const b = run(new CSTR(), config, actions, 7);
  const c = run(new CSTR(), config, actions, 8);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('noise is drawn from a Python-compatible generator', () => {
  // Python: random.Random(42).random() -> 0.6394267984578837, then 0.025010755222666936.
  const r = new PyRandom(42);
  assert.equal(r.random(), 0.6394267984578837);
  assert.equal(r.random(), 0.025010755222666936);
});

test('bad config values raise naming the key', () => {
  const sim = new CSTR();
  assert.throws(() => sim.reset({ Cref_signal: 9 }), /Cref_signal=9: expected a whole number in 1..6/);
  assert.throws(() => sim.reset({ step_time: 0 }), /step_time=0: expected a number > 0/);
  assert.throws(() => sim.reset({ bogus: 1 }), /unknown CSTR config key 'bogus'/);
});

test('the move is capped and the episode truncates after 90 minutes', () => {
  const sim = new CSTR();
  sim.reset({ Cref_signal: 5 });
  assert.equal(sim.step({ Tc_adjust: 50 }).Tc_adjust, 10);
  let steps = 1;
  while (!sim.truncation() && !sim.termination()) {
    sim.step({ Tc_adjust: -10 / 3 });
    steps += 1;
  }
  assert.ok(sim.truncation() || sim.termination());
  assert.ok(steps <= 91);
});
