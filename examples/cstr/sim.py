"""CSTR — a fast, seedable simulator of a cooled continuous stirred-tank reactor.

The embedded sample simulator of simgym. An exothermic, first-order reaction A → B runs in a
cooled tank; the agent moves the coolant (jacket) temperature ``Tc`` so that the outlet
concentration ``Cr`` follows a reference ``Cref`` that ramps from a low-conversion to a
high-conversion operating point, where the reactor is prone to thermal runaway. It reproduces
the public reference sample step for step (``reference/`` beside this file, and
``tests/data/cstr_golden.json``) at a fraction of its cost: no scipy, no interpolator rebuilt per
step, no prints, and noise drawn from the instance's own seeded generator.

Units: time in minutes, concentration in kmol/m³, temperature in K, energy in kcal.

Model (F = 1 m³/min, V = 1 m³, k0 = 34 930 800 1/min, E = 11 843 kcal/kmol,
R = 1.98588 kcal/(kmol·K), ΔH = −5960 kcal/kmol, ρCp = 500 kcal/(m³·K),
UA = 150 kcal/(min·K), Caf = 10 kmol/m³, Tf = 298.2 K)::

    rA     = k0 · exp(−E / (R · Tr)) · Cr
    dCr/dt = F/V · (Caf − Cr) − rA
    dTr/dt = F/V · (Tf − Tr) − ΔH/ρCp · rA − UA/(ρCp · V) · (Tr − Tc)

One control step (the reference's exact behaviour, kept so its baselines stay comparable):

* ``Tc_adjust`` (ΔTc, K) is capped to ±int(10 · step_time); NaN or None count as 0.
* The step is integrated in ``edo_solver_n_its`` equal sub-intervals from the noise-free
  state; the coolant is at ``Tc + ΔTc`` during the first and at ``Tc`` during the others;
  then ``Tc ← Tc + ΔTc`` and the ``Tc_adjust`` state is the change actually applied.
* The references are read at the time *before* the step; the measured ``Cr``/``Tr`` are the
  noise-free values plus ``noise · U(−range, range)`` with ranges 8.5698 − 2 (Cr) and
  373.1311 − 311.2612 (Tr), where ``noise = noise_percentage / 100``.
* ``kpi_rms_conc_error`` is the running RMS of (noise-free Cr − Cref) over the steps.
* Beyond the reference's states, ``Cref_next``/``Tref_next`` give the references the *next*
  step is scored against (the schedule is known in advance, as a plant's setpoint program
  is): without them a controller is always one ramp increment behind. ``Cref_preview``/
  ``Tref_preview`` look ``_PREVIEW`` (5) steps further, so a controller can see a ramp coming.
* Terminated when measured Tr ≥ 400 (runaway), measured Cr ≤ 0, |ΔTc| > 10 · step_time or
  Tc < 50; truncated when the elapsed time exceeds 90 (91 steps of 1 minute).

Reset config (all optional; unknown keys raise ``ValueError``):

* ``Cref_signal`` (1): 1–4 ramp the references from (8.5698, 311.2612) to (2, 373.1311) over 26
  minutes starting at minute 1, 20, 40, 60; 5 holds the low, 6 the high operating point.
* ``noise_percentage`` (0): measurement noise, in percent of the ranges above.
* ``step_time`` (1): minutes per control step.
* ``transition_start`` (1): start of the ramp for signal 1 (2–4 fix their own).
* ``edo_solver_n_its`` (2): sub-intervals per step.

At reset the plant (noise-free) state starts on the reference and the measured state at
(8.5698, 311.2639) plus noise; ``Tc`` starts at 292 (305.0348 for signal 6).

Integration: an adaptive, variable-order Taylor-series method. With ψ = −E/(R·Tr), k = k0·e^ψ
and rA = k·Cr, the scaled Taylor coefficients x_n = x⁽ⁿ⁾(0)·hⁿ/n! of the solution follow from
four short recurrences (Cauchy products), one ``exp`` per step::

    ψ_n = −(Σ_{j=1..n} Tr_j · ψ_{n−j}) / Tr_0           (ψ · Tr = −E/R)
    k_n = (1/n) Σ_{j=1..n} j · ψ_j · k_{n−j}            (k' = k · ψ')
    r_n = Σ_{j=0..n} k_j · Cr_{n−j}                      (rA = k · Cr)
    Cr_{n+1} = h/(n+1) · (δ_{n0}·Caf − Cr_n − r_n)
    Tr_{n+1} = h/(n+1) · (δ_{n0}·(Tf + β·Tc) − (1 + β)·Tr_n − ΔH/ρCp · r_n),  β = UA/(ρCp·V)

The series is summed as soon as its last two terms are below the tolerance (relative 1e-8):
after 2 terms near a steady state, typically 6–10 otherwise, over a whole sub-interval. If 12
terms are not enough (fast dynamics near runaway), the step is shortened to the length where
they would be and the rest of the sub-interval follows in further steps. The result matches
the exact solution to ~2e-8 relative over the golden trajectories, tighter than the
reference's own odeint (LSODA, rtol = atol = 1.5e-8), whose error the unstable high-conversion
operating point amplifies to ~3e-6.

Two implementations of one algorithm. This file is the readable one and the definition; the
optional compiled accelerator ``_cstr_native`` (``native/`` beside this file, installed by
``make``; ``pip install examples/cstr/native`` elsewhere) runs the same control step in C,
operation for operation, so that both give bit-identical states. It exists for speed: in
CPython the bookkeeping of a step alone (references, noise, KPI, the 13-entry state dict) costs
~2 µs and a 12-term series ~4 µs, which keeps pure Python 15–27× faster than the odeint
reference where the target is 50×; the same step in C costs a tenth of that or less
(``bench/cstr_speed.py``). A sim uses the accelerator when it is installed; without it (no C
compiler at install time) the pure-Python path runs, with the same results, only slower.
``CSTR(native=False)`` or ``SIMGYM_CSTR_NATIVE=0`` in the environment selects the pure path;
``CSTR().implementation`` says which one runs.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from math import exp
from typing import Any, ClassVar

try:
    import _cstr_native  # type: ignore[import-not-found]
except ImportError:  # not built (no C compiler when it was installed): pure Python only
    _cstr_native = None
# A build of another version of the algorithm (a stale install) would give other results than
# this file: it is not used.
if getattr(_cstr_native, "VERSION", None) != 1:
    _cstr_native = None

# Process constants (see the module docstring).
_K0 = 34930800.0  # pre-exponential factor, 1/min
_E_R = 11843.0 / 1.98588  # activation energy over gas constant, K
_CAF = 10.0  # feed concentration, kmol/m³ (F/V = 1/min is folded in)
_TF = 298.2  # feed temperature, K
_BETA = 150.0 / 500.0  # UA / (ρCp·V), 1/min
_G = 1.0 + _BETA  # Tr's own decay rate, F/V + β
_Q = -5960.0 / 500.0  # ΔH / ρCp, K·m³/kmol

# Integration tolerance: a term of the series counts as converged below _ATOL + _RTOL·|x|.
_RTOL = 1e-8
_ATOL_C = 1e-8  # kmol/m³
_ATOL_T = 1e-6  # K
# A step that needs more pieces than this is numerically broken (e.g. a non-finite state).
_MAX_PIECES = 100_000

# Operating points (low conversion at the start, high conversion as the target).
_C_LOW, _T_LOW = 8.5698, 311.2612
_C_HIGH, _T_HIGH = 2.0, 373.1311
_C_NOISE = _C_LOW - _C_HIGH  # measurement noise ranges
_T_NOISE = _T_HIGH - _T_LOW
_CR0, _TR0 = 8.5698, 311.2639  # measured state at reset (before noise)


def _taylor_step(c0: float, t0: float, p: float, h: float) -> tuple[float, float, float]:
    """One Taylor step of the CSTR ODE from (c0, t0) with coolant forcing p; see module doc.

    Returns the state after the step and the fraction of ``h`` it covers: 1.0 when the
    series converged by order 12 over all of ``h`` (the common case), less when the step
    had to be shortened to meet the tolerance.
    """
    # Names: c = Cr, t = Tr, s = psi, g_n = n psi_n, e = k, r = rA; each scaled by h**n:
    # c_n = Cr^(n)(0) h^n / n!, so the state after the step is the plain sum of the terms.
    mu = -1.0 / t0
    e0 = _K0 * exp(_E_R * mu)  # k(Tr) = k0 exp(-E/(R Tr)), the only exp of the step
    s0 = _E_R * mu  # psi = -E/(R Tr)
    r0 = e0 * c0  # reaction rate rA = k(Tr) Cr
    c1 = (c0 + r0 - _CAF) * -h
    t1 = (_G * t0 + _Q * r0 - p) * -h
    tol_c = _ATOL_C + _RTOL * c0
    tol_t = _ATOL_T + _RTOL * t0
    ntol_c = -tol_c
    ntol_t = -tol_t
    # order 2
    s1 = (t1 * s0) * mu
    e1 = s1 * e0
    r1 = e0 * c1 + e1 * c0
    q = h * (-1.0 / 2.0)
    c2 = (c1 + r1) * q
    t2 = (_G * t1 + _Q * r1) * q
    if (
        ntol_c <= c2 <= tol_c
        and ntol_t <= t2 <= tol_t
        and ntol_c <= c1 <= tol_c
        and ntol_t <= t1 <= tol_t
    ):
        return c0 + c1 + c2, t0 + t1 + t2, 1.0
    # order 3
    s2 = (t1 * s1 + t2 * s0) * mu
    g2 = 2.0 * s2
    e2 = (s1 * e1 + g2 * e0) * (1.0 / 2.0)
    r2 = e0 * c2 + e1 * c1 + e2 * c0
    q = h * (-1.0 / 3.0)
    c3 = (c2 + r2) * q
    t3 = (_G * t2 + _Q * r2) * q
    # order 4
    s3 = (t1 * s2 + t2 * s1 + t3 * s0) * mu
    g3 = 3.0 * s3
    e3 = (s1 * e2 + g2 * e1 + g3 * e0) * (1.0 / 3.0)
    r3 = e0 * c3 + e1 * c2 + e2 * c1 + e3 * c0
    q = h * (-1.0 / 4.0)
    c4 = (c3 + r3) * q
    t4 = (_G * t3 + _Q * r3) * q
    if (
        ntol_c <= c4 <= tol_c
        and ntol_t <= t4 <= tol_t
        and ntol_c <= c3 <= tol_c
        and ntol_t <= t3 <= tol_t
    ):
        return c0 + c1 + c2 + c3 + c4, t0 + t1 + t2 + t3 + t4, 1.0
    # order 5
    s4 = (t1 * s3 + t2 * s2 + t3 * s1 + t4 * s0) * mu
    g4 = 4.0 * s4
    e4 = (s1 * e3 + g2 * e2 + g3 * e1 + g4 * e0) * (1.0 / 4.0)
    r4 = e0 * c4 + e1 * c3 + e2 * c2 + e3 * c1 + e4 * c0
    q = h * (-1.0 / 5.0)
    c5 = (c4 + r4) * q
    t5 = (_G * t4 + _Q * r4) * q
    if (
        ntol_c <= c5 <= tol_c
        and ntol_t <= t5 <= tol_t
        and ntol_c <= c4 <= tol_c
        and ntol_t <= t4 <= tol_t
    ):
        return c0 + c1 + c2 + c3 + c4 + c5, t0 + t1 + t2 + t3 + t4 + t5, 1.0
    # order 6
    s5 = (t1 * s4 + t2 * s3 + t3 * s2 + t4 * s1 + t5 * s0) * mu
    g5 = 5.0 * s5
    e5 = (s1 * e4 + g2 * e3 + g3 * e2 + g4 * e1 + g5 * e0) * (1.0 / 5.0)
    r5 = e0 * c5 + e1 * c4 + e2 * c3 + e3 * c2 + e4 * c1 + e5 * c0
    q = h * (-1.0 / 6.0)
    c6 = (c5 + r5) * q
    t6 = (_G * t5 + _Q * r5) * q
    if (
        ntol_c <= c6 <= tol_c
        and ntol_t <= t6 <= tol_t
        and ntol_c <= c5 <= tol_c
        and ntol_t <= t5 <= tol_t
    ):
        return c0 + c1 + c2 + c3 + c4 + c5 + c6, t0 + t1 + t2 + t3 + t4 + t5 + t6, 1.0
    # order 7
    s6 = (t1 * s5 + t2 * s4 + t3 * s3 + t4 * s2 + t5 * s1 + t6 * s0) * mu
    g6 = 6.0 * s6
    e6 = (s1 * e5 + g2 * e4 + g3 * e3 + g4 * e2 + g5 * e1 + g6 * e0) * (1.0 / 6.0)
    r6 = e0 * c6 + e1 * c5 + e2 * c4 + e3 * c3 + e4 * c2 + e5 * c1 + e6 * c0
    q = h * (-1.0 / 7.0)
    c7 = (c6 + r6) * q
    t7 = (_G * t6 + _Q * r6) * q
    if (
        ntol_c <= c7 <= tol_c
        and ntol_t <= t7 <= tol_t
        and ntol_c <= c6 <= tol_c
        and ntol_t <= t6 <= tol_t
    ):
        return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7, t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7, 1.0
    # order 8
    s7 = (t1 * s6 + t2 * s5 + t3 * s4 + t4 * s3 + t5 * s2 + t6 * s1 + t7 * s0) * mu
    g7 = 7.0 * s7
    e7 = (s1 * e6 + g2 * e5 + g3 * e4 + g4 * e3 + g5 * e2 + g6 * e1 + g7 * e0) * (1.0 / 7.0)
    r7 = e0 * c7 + e1 * c6 + e2 * c5 + e3 * c4 + e4 * c3 + e5 * c2 + e6 * c1 + e7 * c0
    q = h * (-1.0 / 8.0)
    c8 = (c7 + r7) * q
    t8 = (_G * t7 + _Q * r7) * q
    if (
        ntol_c <= c8 <= tol_c
        and ntol_t <= t8 <= tol_t
        and ntol_c <= c7 <= tol_c
        and ntol_t <= t7 <= tol_t
    ):
        return (
            c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8,
            t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7 + t8,
            1.0,
        )
    # order 9
    s8 = (t1 * s7 + t2 * s6 + t3 * s5 + t4 * s4 + t5 * s3 + t6 * s2 + t7 * s1 + t8 * s0) * mu
    g8 = 8.0 * s8
    e8 = (s1 * e7 + g2 * e6 + g3 * e5 + g4 * e4 + g5 * e3 + g6 * e2 + g7 * e1 + g8 * e0) * (
        1.0 / 8.0
    )
    r8 = e0 * c8 + e1 * c7 + e2 * c6 + e3 * c5 + e4 * c4 + e5 * c3 + e6 * c2 + e7 * c1 + e8 * c0
    q = h * (-1.0 / 9.0)
    c9 = (c8 + r8) * q
    t9 = (_G * t8 + _Q * r8) * q
    if (
        ntol_c <= c9 <= tol_c
        and ntol_t <= t9 <= tol_t
        and ntol_c <= c8 <= tol_c
        and ntol_t <= t8 <= tol_t
    ):
        return (
            c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9,
            t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7 + t8 + t9,
            1.0,
        )
    # order 10
    s9 = (
        t1 * s8 + t2 * s7 + t3 * s6 + t4 * s5 + t5 * s4 + t6 * s3 + t7 * s2 + t8 * s1 + t9 * s0
    ) * mu
    g9 = 9.0 * s9
    e9 = (
        s1 * e8 + g2 * e7 + g3 * e6 + g4 * e5 + g5 * e4 + g6 * e3 + g7 * e2 + g8 * e1 + g9 * e0
    ) * (1.0 / 9.0)
    r9 = (
        e0 * c9
        + e1 * c8
        + e2 * c7
        + e3 * c6
        + e4 * c5
        + e5 * c4
        + e6 * c3
        + e7 * c2
        + e8 * c1
        + e9 * c0
    )
    q = h * (-1.0 / 10.0)
    c10 = (c9 + r9) * q
    t10 = (_G * t9 + _Q * r9) * q
    if (
        ntol_c <= c10 <= tol_c
        and ntol_t <= t10 <= tol_t
        and ntol_c <= c9 <= tol_c
        and ntol_t <= t9 <= tol_t
    ):
        return (
            c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10,
            t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7 + t8 + t9 + t10,
            1.0,
        )
    # order 11
    s10 = (
        t1 * s9
        + t2 * s8
        + t3 * s7
        + t4 * s6
        + t5 * s5
        + t6 * s4
        + t7 * s3
        + t8 * s2
        + t9 * s1
        + t10 * s0
    ) * mu
    g10 = 10.0 * s10
    e10 = (
        s1 * e9
        + g2 * e8
        + g3 * e7
        + g4 * e6
        + g5 * e5
        + g6 * e4
        + g7 * e3
        + g8 * e2
        + g9 * e1
        + g10 * e0
    ) * (1.0 / 10.0)
    r10 = (
        e0 * c10
        + e1 * c9
        + e2 * c8
        + e3 * c7
        + e4 * c6
        + e5 * c5
        + e6 * c4
        + e7 * c3
        + e8 * c2
        + e9 * c1
        + e10 * c0
    )
    q = h * (-1.0 / 11.0)
    c11 = (c10 + r10) * q
    t11 = (_G * t10 + _Q * r10) * q
    if (
        ntol_c <= c11 <= tol_c
        and ntol_t <= t11 <= tol_t
        and ntol_c <= c10 <= tol_c
        and ntol_t <= t10 <= tol_t
    ):
        return (
            c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11,
            t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7 + t8 + t9 + t10 + t11,
            1.0,
        )
    # order 12
    s11 = (
        t1 * s10
        + t2 * s9
        + t3 * s8
        + t4 * s7
        + t5 * s6
        + t6 * s5
        + t7 * s4
        + t8 * s3
        + t9 * s2
        + t10 * s1
        + t11 * s0
    ) * mu
    g11 = 11.0 * s11
    e11 = (
        s1 * e10
        + g2 * e9
        + g3 * e8
        + g4 * e7
        + g5 * e6
        + g6 * e5
        + g7 * e4
        + g8 * e3
        + g9 * e2
        + g10 * e1
        + g11 * e0
    ) * (1.0 / 11.0)
    r11 = (
        e0 * c11
        + e1 * c10
        + e2 * c9
        + e3 * c8
        + e4 * c7
        + e5 * c6
        + e6 * c5
        + e7 * c4
        + e8 * c3
        + e9 * c2
        + e10 * c1
        + e11 * c0
    )
    q = h * (-1.0 / 12.0)
    c12 = (c11 + r11) * q
    t12 = (_G * t11 + _Q * r11) * q
    if (
        ntol_c <= c12 <= tol_c
        and ntol_t <= t12 <= tol_t
        and ntol_c <= c11 <= tol_c
        and ntol_t <= t11 <= tol_t
    ):
        return (
            c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11 + c12,
            t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7 + t8 + t9 + t10 + t11 + t12,
            1.0,
        )
    # Not converged over h: shorten the step so the last two terms meet the tolerance.
    if tol_c < 0.0 or tol_t < 0.0:
        # A state far below zero (Cr < -1, Tr < -100 K) has a negative tolerance: no step
        # length meets it (and ** would go complex). NaN makes _finish raise ArithmeticError.
        return c0, t0, math.nan
    f = 0.9 * min(
        (tol_c / (abs(c12) + 1e-300)) ** (1.0 / 12.0),
        (tol_t / (abs(t12) + 1e-300)) ** (1.0 / 12.0),
        (tol_c / (abs(c11) + 1e-300)) ** (1.0 / 11.0),
        (tol_t / (abs(t11) + 1e-300)) ** (1.0 / 11.0),
    )
    cr = c12
    tr = t12
    cr = cr * f + c11
    tr = tr * f + t11
    cr = cr * f + c10
    tr = tr * f + t10
    cr = cr * f + c9
    tr = tr * f + t9
    cr = cr * f + c8
    tr = tr * f + t8
    cr = cr * f + c7
    tr = tr * f + t7
    cr = cr * f + c6
    tr = tr * f + t6
    cr = cr * f + c5
    tr = tr * f + t5
    cr = cr * f + c4
    tr = tr * f + t4
    cr = cr * f + c3
    tr = tr * f + t3
    cr = cr * f + c2
    tr = tr * f + t2
    cr = cr * f + c1
    tr = tr * f + t1
    cr = cr * f + c0
    tr = tr * f + t0
    return cr, tr, f


def _finish(c: float, t: float, p: float, h: float, frac: float) -> tuple[float, float]:
    """Complete a sub-interval of length h whose first Taylor step covered only ``frac`` of it."""
    pieces = 1
    while frac != 1.0:
        # Taylor coefficients are NaN from a non-finite state; never loop on those.
        if not 0.0 < frac < 1.0 or pieces >= _MAX_PIECES:
            raise ArithmeticError(f"CSTR integration failed at Cr={c!r}, Tr={t!r}")
        h -= frac * h
        c, t, frac = _taylor_step(c, t, p, h)
        pieces += 1
    return c, t


def _number(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"CSTR config {key}={value!r}: expected a finite number")
    return number


def _integral(value: Any, key: str, low: int, high: int | None) -> int:
    """A config value that must be a whole number in [low, high] (Struct sends 2 as 2.0)."""
    number = _number(value, key)
    if number != int(number) or number < low or (high is not None and number > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"CSTR config {key}={value!r}: expected a whole number {bound}")
    return int(number)


def _positive(value: Any, key: str, *, allow_zero: bool) -> float:
    number = _number(value, key)
    if number < 0.0 or (number == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"CSTR config {key}={value!r}: expected a number {bound}")
    return number


# Steps of reference preview beyond the next step (Cref_preview/Tref_preview).
_PREVIEW = 5


class CSTR:
    """The CSTR sample simulator: ``reset(config, seed) -> states``, ``step(action) -> states``.

    See the module docstring for the model, the config keys and the exact step behaviour.
    """

    state_names: ClassVar[tuple[str, ...]] = (
        "Cr_no_noise",
        "Tr_no_noise",
        "Cr",
        "Tr",
        "Tc",
        "Cref",
        "Tref",
        "Tc_adjust",
        "kpi_rms_conc_error",
        "Cref_next",
        "Tref_next",
        "Cref_preview",
        "Tref_preview",
    )
    action_names: ClassVar[tuple[str, ...]] = ("Tc_adjust",)
    config_keys: ClassVar[tuple[str, ...]] = (
        "Cref_signal",
        "noise_percentage",
        "step_time",
        "transition_start",
        "edo_solver_n_its",
    )
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"Tc_adjust": (-10.0, 10.0)}
    descriptions: ClassVar[dict[str, str]] = {
        "Cr_no_noise": "outlet concentration without measurement noise, kmol/m³",
        "Tr_no_noise": "reactor temperature without measurement noise, K",
        "Cr": "measured outlet concentration, kmol/m³",
        "Tr": "measured reactor temperature, K (runaway at 400)",
        "Tc": "coolant (jacket) temperature, K",
        "Cref": "concentration reference, kmol/m³",
        "Tref": "temperature reference, K",
        "Tc_adjust": "coolant change applied this step, K",
        "kpi_rms_conc_error": "running RMS of (Cr_no_noise - Cref), kmol/m³",
        "Cref_next": "the concentration reference the next step is scored against, kmol/m³",
        "Tref_next": "the temperature reference of the next step, K",
        "Cref_preview": "the concentration reference 5 steps after the next one, kmol/m³",
        "Tref_preview": "the temperature reference 5 steps after the next one, K",
        "Cref_signal": "reference profile: 1-4 ramps starting at minute 1/20/40/60, 5 low, 6 high",
        "noise_percentage": "measurement noise, percent of the operating range",
        "step_time": "minutes per control step",
        "transition_start": "ramp start for Cref_signal 1, minutes",
        "edo_solver_n_its": "integration sub-intervals per step",
    }

    def __init__(self, native: bool | None = None) -> None:
        """Create the sim, reset to the default scenario.

        Args:
            native: True requires the compiled accelerator, False selects the pure-Python
                path; None (the default) uses the accelerator when it is installed, unless
                the environment sets ``SIMGYM_CSTR_NATIVE=0``. Both give the same states.

        Raises:
            ImportError: ``native=True`` and ``_cstr_native`` is not installed.
        """
        # Unseeded until reset(seed=...): OS entropy, like a fresh random.Random().
        self._rng = random.Random()
        if native is None:
            native = _cstr_native is not None and os.environ.get("SIMGYM_CSTR_NATIVE") != "0"
        elif native and _cstr_native is None:
            raise ImportError(
                "CSTR(native=True): the accelerator _cstr_native is not installed "
                "(pip install examples/cstr/native)"
            )
        self._core: Any = None
        if native:
            self._attach_core()
        self.reset()

    def _attach_core(self) -> None:
        # The core keeps the episode state and draws the noise from this instance's
        # generator, so seeded streams are the pure path's. Its bound methods shadow the
        # Python ones on the instance: a step is then one C call, no Python frame.
        self._core = _cstr_native.Core(self._rng.random)
        self.step = self._core.step  # type: ignore[method-assign]
        self.termination = self._core.termination  # type: ignore[method-assign]
        self.truncation = self._core.truncation  # type: ignore[method-assign]

    def __getstate__(self) -> dict[str, Any]:
        # pickle and copy.deepcopy: the core is C and copy treats its bound methods as atomic
        # (a deep copy would step the original's core); keep its fields, rebuild it on load.
        state = self.__dict__.copy()
        if self._core is not None:
            for name in ("step", "termination", "truncation"):
                del state[name]
            state["_core"] = self._core.dump()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fields = state.get("_core")
        self.__dict__.update(state, _core=None)
        if fields is not None:
            if _cstr_native is None:
                raise ImportError("this CSTR was saved native; _cstr_native is not installed")
            self._attach_core()
            self._core.restore(fields)

    @property
    def implementation(self) -> str:
        """Which path steps this instance: ``"native"`` (``_cstr_native``) or ``"python"``."""
        return "python" if self._core is None else "native"

    @property
    def sim_name(self) -> str:
        """Name reported to clients."""
        return "CSTR"

    def reset(self, config: Mapping[str, Any] | None = None, seed: int | None = None) -> dict:
        """Start an episode with a scenario config; return the states.

        Args:
            config: Reset config (see the module docstring); missing keys take defaults.
            seed: Seeds the measurement noise; None continues the current noise stream.

        Raises:
            ValueError: An unknown config key or an invalid value.
        """
        config = config or {}
        for key in config:
            if key not in self.config_keys:
                raise ValueError(
                    f"unknown CSTR config key {key!r}; known keys: {', '.join(self.config_keys)}"
                )
        signal = _integral(config.get("Cref_signal", 1), "Cref_signal", 1, 6)
        noise = _positive(config.get("noise_percentage", 0), "noise_percentage", allow_zero=True)
        step_time = _positive(config.get("step_time", 1), "step_time", allow_zero=False)
        start = config.get("transition_start")
        start = 1.0 if start is None else _positive(start, "transition_start", allow_zero=True)
        n_its = _integral(config.get("edo_solver_n_its", 2), "edo_solver_n_its", 1, None)
        if seed is not None:
            self._rng.seed(seed)

        self._signal = signal
        self._step_time = step_time
        self._n_its = n_its
        self._h = step_time / n_its
        self._max_adjust = float(int(10 * step_time))
        # Noise amplitudes: measured = noise-free + amplitude · U(−1, 1).
        self._c_noise = noise / 100 * _C_NOISE
        self._t_noise = noise / 100 * _T_NOISE
        self._noisy = noise > 0.0
        # Reference schedule: before p1 at the start point, a ramp up to p2, then the end point.
        # Signals 5 and 6 are the degenerate schedules "always before" and "always after".
        self._ref_before = (_C_LOW, _T_LOW)
        self._ref_after = (_C_HIGH, _T_HIGH)
        self._shift = 0.0
        self._c_slope = self._t_slope = 0.0
        if signal <= 4:
            start = {2: 20.0, 3: 40.0, 4: 60.0}.get(signal, start)
            p1 = int(start / step_time)
            p2 = p1 + int(26 / step_time)
            self._p1, self._p2 = float(p1), float(p2)
            if signal == 1:
                self._shift = float(p1)  # signal 1 reads its schedule p1 ahead: ramps at once
            if p2 > p1:
                self._c_slope = (_C_HIGH - _C_LOW) / (p2 - p1)
                self._t_slope = (_T_HIGH - _T_LOW) / (p2 - p1)
        elif signal == 5:
            self._p1 = self._p2 = math.inf
        else:
            self._p1 = self._p2 = -math.inf

        self._tc = 305.0348 if signal == 6 else 292.0
        self._cref, self._tref = self._references(1)
        # The plant starts on the reference; the measurements carry the noise.
        self._cr = self._cref
        self._tr = self._tref
        self._cr_meas = _CR0 + self._noise(self._c_noise)
        self._tr_meas = _TR0 + self._noise(self._t_noise)
        self._time = 0.0
        self._rms = 0.0
        self._adjust = 0.0
        if self._core is None:
            return self._states()
        # From here on the core holds the episode (the attributes above keep reset's values).
        self._core.load(
            step_time=step_time,
            n_its=n_its,
            max_adjust=self._max_adjust,
            c_noise=self._c_noise,
            t_noise=self._t_noise,
            noisy=self._noisy,
            shift=self._shift,
            p1=self._p1,
            p2=self._p2,
            c_slope=self._c_slope,
            t_slope=self._t_slope,
            tc=self._tc,
            cr=self._cr,
            tr=self._tr,
            cr_meas=self._cr_meas,
            tr_meas=self._tr_meas,
            cref=self._cref,
            tref=self._tref,
            time=self._time,
            rms=self._rms,
            adjust=self._adjust,
        )
        return self._core.states()

    def step(self, action: Mapping[str, Any]) -> dict:
        """Move the coolant by ``action["Tc_adjust"]`` (K) and advance one control step.

        The pure-Python step; a native instance steps with ``_cstr_native.Core.step``, the
        same code in C.
        """
        # Hot path: everything inlined, attributes read once (a call costs ~0.1 µs here).
        adjust = action["Tc_adjust"]
        adjust = 0.0 if adjust is None else float(adjust)
        cap = self._max_adjust
        if adjust > cap:
            adjust = cap
        elif adjust < -cap:
            adjust = -cap
        elif adjust != adjust:  # NaN: no move, as in the reference
            adjust = 0.0

        # References at the time before the step (piecewise linear, see _references).
        time = self._time
        k = time + self._shift
        if k <= self._p1:
            cref, tref = self._ref_before
        elif k <= self._p2:
            k -= self._p1
            cref = self._c_slope * k + _C_LOW
            tref = self._t_slope * k + _T_LOW
        else:
            cref, tref = self._ref_after

        # Noise is drawn before the plant moves, Cr first (the reference's order).
        if self._noisy:
            c_noise = self._c_noise * (2.0 * self._rng.random() - 1.0)
            t_noise = self._t_noise * (2.0 * self._rng.random() - 1.0)
        else:
            c_noise = t_noise = 0.0

        # First sub-interval at the new coolant temperature, the others at the old one.
        tc = self._tc
        h = self._h
        forcing = _TF + _BETA * (tc + adjust)
        cr, tr, frac = _taylor_step(self._cr, self._tr, forcing, h)
        if frac != 1.0:
            cr, tr = _finish(cr, tr, forcing, h, frac)
        n_its = self._n_its
        if n_its > 1:
            forcing = _TF + _BETA * tc
            for _ in range(n_its - 1):
                cr, tr, frac = _taylor_step(cr, tr, forcing, h)
                if frac != 1.0:
                    cr, tr = _finish(cr, tr, forcing, h, frac)
        new_tc = tc + adjust
        adjust = new_tc - tc  # the change actually applied, as the reference reports it
        time += self._step_time

        # Running RMS of the noise-free concentration error (the reference's formula).
        n = int(time / self._step_time)
        rms = self._rms
        rms = math.sqrt(
            (rms * rms * (n - 1 if n > 1 else 0) + (cr - cref) ** 2) / (n if n > 1 else 1)
        )

        cr_meas = cr + c_noise
        tr_meas = tr + t_noise
        self._tc = new_tc
        self._adjust = adjust
        self._cr = cr
        self._tr = tr
        self._cr_meas = cr_meas
        self._tr_meas = tr_meas
        self._cref = cref
        self._tref = tref
        self._time = time
        self._rms = rms
        # The reference schedule is known in advance (as a setpoint program is in a plant):
        # the next step is scored against the reference at the current time.
        cref_next, tref_next = self._references(time)
        cref_preview, tref_preview = self._references(time + _PREVIEW * self._step_time)
        return {
            "Cr_no_noise": cr,
            "Tr_no_noise": tr,
            "Cr": cr_meas,
            "Tr": tr_meas,
            "Tc": new_tc,
            "Cref": cref,
            "Tref": tref,
            "Tc_adjust": adjust,
            "kpi_rms_conc_error": rms,
            "Cref_next": cref_next,
            "Tref_next": tref_next,
            "Cref_preview": cref_preview,
            "Tref_preview": tref_preview,
        }

    def termination(self) -> bool:
        """Runaway (measured Tr ≥ 400), measured Cr ≤ 0, an impossible move, or Tc < 50."""
        return (
            self._tr_meas >= 400.0
            or self._cr_meas <= 0.0
            or abs(self._adjust) > 10.0 * self._step_time
            or self._tc < 50.0
        )

    def truncation(self) -> bool:
        """The episode's time budget (90 minutes) is used up."""
        return self._time > 90.0

    def _noise(self, amplitude: float) -> float:
        # amplitude · U(-1, 1), like random.uniform(-a, a); nothing is drawn when noise is off.
        if not self._noisy:
            return 0.0
        return amplitude * (2.0 * self._rng.random() - 1.0)

    def _references(self, time: float) -> tuple[float, float]:
        """(Cref, Tref) at a time; step() inlines the same code."""
        k = time + self._shift
        if k <= self._p1:
            return self._ref_before
        if k <= self._p2:
            # The reference's interp1d arithmetic (slope · offset + start), for equal values.
            k -= self._p1
            return self._c_slope * k + _C_LOW, self._t_slope * k + _T_LOW
        return self._ref_after

    def _states(self) -> dict:
        return {
            "Cr_no_noise": self._cr,
            "Tr_no_noise": self._tr,
            "Cr": self._cr_meas,
            "Tr": self._tr_meas,
            "Tc": self._tc,
            "Cref": self._cref,
            "Tref": self._tref,
            "Tc_adjust": self._adjust,
            "kpi_rms_conc_error": self._rms,
            "Cref_next": self._references(self._time)[0],
            "Tref_next": self._references(self._time)[1],
            "Cref_preview": self._references(self._time + _PREVIEW * self._step_time)[0],
            "Tref_preview": self._references(self._time + _PREVIEW * self._step_time)[1],
        }
