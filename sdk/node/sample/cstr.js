// CSTR: the simgym sample simulator (examples/cstr/sim.py), ported to JavaScript.
//
// A cooled continuous stirred-tank reactor: an exothermic first-order reaction A -> B; the agent
// moves the coolant temperature Tc by `Tc_adjust` so that the outlet concentration Cr follows a
// reference that ramps from a low- to a high-conversion operating point. examples/cstr/sim.py's
// docstring is the model's definition (equations, step rules, config keys); this file runs the
// same algorithm operation for operation (the same Taylor-series integrator with the same
// tolerances, the same order of floating-point operations), and draws its noise from a
// Python-compatible Mersenne Twister (random.js), so that a seeded episode gives the Python
// sample's states. Where V8's Math.exp/Math.pow round differently from the C library's in the
// last bit, the two differ by that much (the tests bound it).
//
// Units: minutes, kmol/m³, K, kcal.

import { PyRandom } from './random.js';

// Process constants (see examples/cstr/sim.py).
const K0 = 34930800.0; // pre-exponential factor, 1/min
const E_R = 11843.0 / 1.98588; // activation energy over gas constant, K
const CAF = 10.0; // feed concentration, kmol/m³ (F/V = 1/min folded in)
const TF = 298.2; // feed temperature, K
const BETA = 150.0 / 500.0; // UA / (ρCp·V), 1/min
const G = 1.0 + BETA; // Tr's own decay rate
const Q = -5960.0 / 500.0; // ΔH / ρCp
const RTOL = 1e-8;
const ATOL_C = 1e-8;
const ATOL_T = 1e-6;
const MAX_PIECES = 100_000;
const ORDER = 12; // highest Taylor order tried over a step
const C_LOW = 8.5698;
const T_LOW = 311.2612;
const C_HIGH = 2.0;
const T_HIGH = 373.1311;
const C_NOISE = C_LOW - C_HIGH;
const T_NOISE = T_HIGH - T_LOW;
const CR0 = 8.5698;
const TR0 = 311.2639;
const PREVIEW = 5; // steps of reference preview beyond the next step

// Scratch for the Taylor coefficients (one step at a time: Node runs one call at a time).
const c = new Float64Array(ORDER + 1);
const t = new Float64Array(ORDER + 1);
const s = new Float64Array(ORDER);
const g = new Float64Array(ORDER);
const e = new Float64Array(ORDER);
const r = new Float64Array(ORDER);
// _taylorStep's results.
let outC = 0;
let outT = 0;
let outFrac = 1;

const within = (x, tol) => -tol <= x && x <= tol; // false for NaN, as Python's chained compare

// Python's min(): the first of the smallest, NaN-blind as Python's comparisons are.
function pyMin(values) {
  let best = values[0];
  for (let i = 1; i < values.length; i++) if (values[i] < best) best = values[i];
  return best;
}

/**
 * One Taylor step of the CSTR ODE from (c0, t0) with coolant forcing p over h: sets outC,
 * outT and outFrac (1 when the series converged by order 12 over all of h, less when the step
 * had to be shortened). examples/cstr/sim.py's _taylor_step, with its unrolled orders as a loop
 * in the same operation order.
 */
function taylorStep(c0, t0, p, h) {
  const mu = -1.0 / t0;
  const e0 = K0 * Math.exp(E_R * mu);
  const s0 = E_R * mu;
  const r0 = e0 * c0;
  c[0] = c0;
  t[0] = t0;
  s[0] = s0;
  e[0] = e0;
  r[0] = r0;
  c[1] = (c0 + r0 - CAF) * -h;
  t[1] = (G * t0 + Q * r0 - p) * -h;
  const tolC = ATOL_C + RTOL * c0;
  const tolT = ATOL_T + RTOL * t0;
  for (let m = 1; m < ORDER; m++) {
    // psi_m = -(sum_{j=1..m} Tr_j psi_{m-j}) / Tr_0, as (sum) * mu.
    let sum = t[1] * s[m - 1];
    for (let j = 2; j <= m; j++) sum += t[j] * s[m - j];
    s[m] = sum * mu;
    g[m] = m === 1 ? s[1] : m * s[m];
    // k_m = (1/m) sum_{j=1..m} j psi_j k_{m-j}
    sum = g[1] * e[m - 1];
    for (let j = 2; j <= m; j++) sum += g[j] * e[m - j];
    e[m] = m === 1 ? sum : sum * (1.0 / m);
    // r_m = sum_{j=0..m} k_j Cr_{m-j}
    sum = e[0] * c[m];
    for (let j = 1; j <= m; j++) sum += e[j] * c[m - j];
    r[m] = sum;
    const q = h * (-1.0 / (m + 1));
    c[m + 1] = (c[m] + sum) * q;
    t[m + 1] = (G * t[m] + Q * sum) * q;
    const n = m + 1;
    // Converged when the last two terms are below the tolerance (not checked at order 3).
    if (n !== 3 && within(c[n], tolC) && within(t[n], tolT) && within(c[m], tolC) && within(t[m], tolT)) {
      let cs = c[0];
      let ts = t[0];
      for (let j = 1; j <= n; j++) {
        cs += c[j];
        ts += t[j];
      }
      outC = cs;
      outT = ts;
      outFrac = 1.0;
      return;
    }
  }
  // Not converged over h: shorten the step so the last two terms meet the tolerance.
  if (tolC < 0.0 || tolT < 0.0) {
    outC = c0;
    outT = t0;
    outFrac = NaN;
    return;
  }
  const f =
    0.9 *
    pyMin([
      Math.pow(tolC / (Math.abs(c[12]) + 1e-300), 1.0 / 12.0),
      Math.pow(tolT / (Math.abs(t[12]) + 1e-300), 1.0 / 12.0),
      Math.pow(tolC / (Math.abs(c[11]) + 1e-300), 1.0 / 11.0),
      Math.pow(tolT / (Math.abs(t[11]) + 1e-300), 1.0 / 11.0),
    ]);
  let cr = c[12];
  let tr = t[12];
  for (let j = 11; j >= 0; j--) {
    cr = cr * f + c[j];
    tr = tr * f + t[j];
  }
  outC = cr;
  outT = tr;
  outFrac = f;
}

/** Complete a sub-interval of length h whose first Taylor step covered only `frac` of it. */
function finish(cr, tr, p, h, frac) {
  let pieces = 1;
  while (frac !== 1.0) {
    if (!(frac > 0.0 && frac < 1.0) || pieces >= MAX_PIECES) {
      throw new RangeError(`CSTR integration failed at Cr=${cr}, Tr=${tr}`);
    }
    h -= frac * h;
    taylorStep(cr, tr, p, h);
    cr = outC;
    tr = outT;
    frac = outFrac;
    pieces += 1;
  }
  outC = cr;
  outT = tr;
}

function toNumber(value, key) {
  const number = value === null || value === undefined ? NaN : Number(value);
  if (!Number.isFinite(number)) {
    throw new RangeError(`CSTR config ${key}=${JSON.stringify(value)}: expected a finite number`);
  }
  return number;
}

function integral(value, key, low, high) {
  const number = toNumber(value, key);
  if (number !== Math.trunc(number) || number < low || (high !== null && number > high)) {
    const bound = high !== null ? `in ${low}..${high}` : `>= ${low}`;
    throw new RangeError(`CSTR config ${key}=${JSON.stringify(value)}: expected a whole number ${bound}`);
  }
  return Math.trunc(number);
}

function positive(value, key, allowZero) {
  const number = toNumber(value, key);
  if (number < 0.0 || (number === 0.0 && !allowZero)) {
    throw new RangeError(`CSTR config ${key}=${JSON.stringify(value)}: expected a number ${allowZero ? '>= 0' : '> 0'}`);
  }
  return number;
}

const get = (config, key, fallback) => (Object.hasOwn(config, key) ? config[key] : fallback);

export class CSTR {
  static simName = 'CSTR';
  static states = [
    { name: 'Cr_no_noise', description: 'outlet concentration without measurement noise, kmol/m³' },
    { name: 'Tr_no_noise', description: 'reactor temperature without measurement noise, K' },
    { name: 'Cr', description: 'measured outlet concentration, kmol/m³' },
    { name: 'Tr', description: 'measured reactor temperature, K (runaway at 400)' },
    { name: 'Tc', description: 'coolant (jacket) temperature, K' },
    { name: 'Cref', description: 'concentration reference, kmol/m³' },
    { name: 'Tref', description: 'temperature reference, K' },
    { name: 'Tc_adjust', description: 'coolant change applied this step, K' },
    { name: 'kpi_rms_conc_error', description: 'running RMS of (Cr_no_noise - Cref), kmol/m³' },
    { name: 'Cref_next', description: 'the concentration reference the next step is scored against, kmol/m³' },
    { name: 'Tref_next', description: 'the temperature reference of the next step, K' },
    { name: 'Cref_preview', description: 'the concentration reference 5 steps after the next one, kmol/m³' },
    { name: 'Tref_preview', description: 'the temperature reference 5 steps after the next one, K' },
  ];
  static actions = [{ name: 'Tc_adjust', low: -10.0, high: 10.0, description: 'coolant change per step, K' }];
  static config = [
    { name: 'Cref_signal', description: 'reference profile: 1-4 ramps starting at minute 1/20/40/60, 5 low, 6 high' },
    { name: 'noise_percentage', description: 'measurement noise, percent of the operating range' },
    { name: 'step_time', description: 'minutes per control step' },
    { name: 'transition_start', description: 'ramp start for Cref_signal 1, minutes' },
    { name: 'edo_solver_n_its', description: 'integration sub-intervals per step' },
  ];
  static seedable = true;

  constructor() {
    // Unseeded until reset(config, seed): OS entropy, like a fresh random.Random().
    this.rng = new PyRandom();
    this.reset();
  }

  /**
   * Start an episode with a scenario config; return the states.
   * @param {Record<string, unknown>} [config] missing keys take defaults
   * @param {number} [seed] seeds the measurement noise; none continues the current stream
   */
  reset(config = {}, seed = undefined) {
    config = config ?? {};
    for (const key of Object.keys(config)) {
      if (!CSTR.config.some((v) => v.name === key)) {
        throw new RangeError(`unknown CSTR config key '${key}'; known keys: ${CSTR.config.map((v) => v.name).join(', ')}`);
      }
    }
    const signal = integral(get(config, 'Cref_signal', 1), 'Cref_signal', 1, 6);
    const noise = positive(get(config, 'noise_percentage', 0), 'noise_percentage', true);
    const stepTime = positive(get(config, 'step_time', 1), 'step_time', false);
    let start = get(config, 'transition_start', null);
    start = start === null ? 1.0 : positive(start, 'transition_start', true);
    const nIts = integral(get(config, 'edo_solver_n_its', 2), 'edo_solver_n_its', 1, null);
    if (seed !== undefined && seed !== null) this.rng.seed(seed);

    this.stepTime = stepTime;
    this.nIts = nIts;
    this.h = stepTime / nIts;
    this.maxAdjust = Math.trunc(10 * stepTime);
    this.cNoise = (noise / 100) * C_NOISE;
    this.tNoise = (noise / 100) * T_NOISE;
    this.noisy = noise > 0.0;
    this.shift = 0.0;
    this.cSlope = 0.0;
    this.tSlope = 0.0;
    if (signal <= 4) {
      start = { 2: 20.0, 3: 40.0, 4: 60.0 }[signal] ?? start;
      const p1 = Math.trunc(start / stepTime);
      const p2 = p1 + Math.trunc(26 / stepTime);
      this.p1 = p1;
      this.p2 = p2;
      if (signal === 1) this.shift = p1; // signal 1 reads its schedule p1 ahead
      if (p2 > p1) {
        this.cSlope = (C_HIGH - C_LOW) / (p2 - p1);
        this.tSlope = (T_HIGH - T_LOW) / (p2 - p1);
      }
    } else if (signal === 5) {
      this.p1 = this.p2 = Infinity;
    } else {
      this.p1 = this.p2 = -Infinity;
    }
    this.tc = signal === 6 ? 305.0348 : 292.0;
    [this.cref, this.tref] = this.references(1);
    // The plant starts on the reference; the measurements carry the noise.
    this.cr = this.cref;
    this.tr = this.tref;
    this.crMeas = CR0 + this.drawNoise(this.cNoise);
    this.trMeas = TR0 + this.drawNoise(this.tNoise);
    this.time = 0.0;
    this.rms = 0.0;
    this.adjust = 0.0;
    return this.states();
  }

  /**
   * Move the coolant by action.Tc_adjust (K) and advance one control step.
   * @param {{Tc_adjust: number}} action
   */
  step(action) {
    let adjust = action.Tc_adjust;
    adjust = adjust === null || adjust === undefined ? 0.0 : Number(adjust);
    const cap = this.maxAdjust;
    if (adjust > cap) adjust = cap;
    else if (adjust < -cap) adjust = -cap;
    else if (adjust !== adjust) adjust = 0.0; // NaN: no move, as in the reference

    // References at the time before the step.
    let time = this.time;
    const [cref, tref] = this.references(time);

    // Noise is drawn before the plant moves, Cr first (the reference's order).
    let cNoise = 0.0;
    let tNoise = 0.0;
    if (this.noisy) {
      cNoise = this.cNoise * (2.0 * this.rng.random() - 1.0);
      tNoise = this.tNoise * (2.0 * this.rng.random() - 1.0);
    }

    // First sub-interval at the new coolant temperature, the others at the old one.
    const tc = this.tc;
    const h = this.h;
    let forcing = TF + BETA * (tc + adjust);
    taylorStep(this.cr, this.tr, forcing, h);
    if (outFrac !== 1.0) finish(outC, outT, forcing, h, outFrac);
    let cr = outC;
    let tr = outT;
    if (this.nIts > 1) {
      forcing = TF + BETA * tc;
      for (let i = 0; i < this.nIts - 1; i++) {
        taylorStep(cr, tr, forcing, h);
        if (outFrac !== 1.0) finish(outC, outT, forcing, h, outFrac);
        cr = outC;
        tr = outT;
      }
    }
    const newTc = tc + adjust;
    adjust = newTc - tc; // the change actually applied, as the reference reports it
    time += this.stepTime;

    // Running RMS of the noise-free concentration error (the reference's formula).
    const n = Math.trunc(time / this.stepTime);
    const rms = this.rms;
    const err = cr - cref;
    this.rms = Math.sqrt((rms * rms * (n > 1 ? n - 1 : 0) + err * err) / (n > 1 ? n : 1));

    this.tc = newTc;
    this.adjust = adjust;
    this.cr = cr;
    this.tr = tr;
    this.crMeas = cr + cNoise;
    this.trMeas = tr + tNoise;
    this.cref = cref;
    this.tref = tref;
    this.time = time;
    return this.states();
  }

  /** Runaway (measured Tr >= 400), measured Cr <= 0, an impossible move, or Tc < 50. */
  termination() {
    return this.trMeas >= 400.0 || this.crMeas <= 0.0 || Math.abs(this.adjust) > 10.0 * this.stepTime || this.tc < 50.0;
  }

  /** The episode's time budget (90 minutes) is used up. */
  truncation() {
    return this.time > 90.0;
  }

  drawNoise(amplitude) {
    // amplitude · U(-1, 1); nothing is drawn when noise is off.
    if (!this.noisy) return 0.0;
    return amplitude * (2.0 * this.rng.random() - 1.0);
  }

  /** [Cref, Tref] at a time (piecewise linear: before, ramp, after). */
  references(time) {
    let k = time + this.shift;
    if (k <= this.p1) return [C_LOW, T_LOW];
    if (k <= this.p2) {
      k -= this.p1;
      return [this.cSlope * k + C_LOW, this.tSlope * k + T_LOW];
    }
    return [C_HIGH, T_HIGH];
  }

  states() {
    const [crefNext, trefNext] = this.references(this.time);
    const [crefPreview, trefPreview] = this.references(this.time + PREVIEW * this.stepTime);
    return {
      Cr_no_noise: this.cr,
      Tr_no_noise: this.tr,
      Cr: this.crMeas,
      Tr: this.trMeas,
      Tc: this.tc,
      Cref: this.cref,
      Tref: this.tref,
      Tc_adjust: this.adjust,
      kpi_rms_conc_error: this.rms,
      Cref_next: crefNext,
      Tref_next: trefNext,
      Cref_preview: crefPreview,
      Tref_preview: trefPreview,
    };
  }
}
