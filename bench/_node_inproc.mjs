// The JS CSTR sample called directly (no transport): bench/node_sim.py's in-process JS case.
// Reads {"actions": [...], "steps": N, "repeats": R} on stdin; prints one JSON line per repeat:
// {"us": microseconds per env step, "cpu_us": this process's CPU per env step}. Episodes end and
// reset exactly as in bench/bridge.py's InProcess (episode_config: Cref_signal 1-5 in turn,
// 5 % noise, the episode index as seed).
import { readFileSync } from 'node:fs';
import { CSTR } from '../sdk/node/sample/cstr.js';

const { actions, steps, repeats, noise } = JSON.parse(readFileSync(0, 'utf8'));
const sim = new CSTR();
let episode = 0;
let t = 0;
const reset = () => {
  sim.reset({ Cref_signal: (episode % 5) + 1, noise_percentage: noise }, episode);
  episode += 1;
};
reset();
const run = (n) => {
  for (let i = 0; i < n; i++) {
    sim.step({ Tc_adjust: actions[t % actions.length] });
    t += 1;
    if (sim.termination() || sim.truncation()) reset();
  }
};
run(50000); // warm-up: V8 compiles the step once it is hot (~50 ms)
for (let r = 0; r < repeats; r++) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  run(steps);
  const wall = Number(process.hrtime.bigint() - t0) / 1e3;
  const cpu = process.cpuUsage(c0);
  process.stdout.write(`${JSON.stringify({ us: wall / steps, cpu_us: (cpu.user + cpu.system) / steps })}\n`);
}
