"""CSTR ODE model and the one-control-step solver (scipy odeint, reference style).

Written in the style of the public reference sample: module-level constants, a model
function for ``scipy.integrate.odeint`` and a solver that integrates one control step in
``n_its`` sub-intervals, each with its own ``odeint`` call.
"""

import math

import numpy as np
from scipy.integrate import odeint

# Process constants (units: min, m³, kmol, K, kcal).
F = 1.0  # volumetric flow rate, m³/min
V = 1.0  # reactor volume, m³
k0 = 34930800.0  # pre-exponential factor, 1/min
E = 11843.0  # activation energy, kcal/kmol
R = 1.98588  # gas constant, kcal/(kmol·K)
dH = -5960.0  # heat of reaction, kcal/kmol
rhoCp = 500.0  # density · heat capacity, kcal/(m³·K)
UA = 150.0  # heat transfer coefficient · area, kcal/(min·K)
Caf = 10.0  # feed concentration, kmol/m³
Tf = 298.2  # feed temperature, K


def cstr_model(z, t, Tc):
    """Right-hand side of the CSTR ODE: z = [Cr, Tr], Tc = coolant temperature."""
    Cr, Tr = z
    rA = k0 * np.exp(-E / (R * Tr)) * Cr
    dCrdt = F / V * (Caf - Cr) - rA
    dTrdt = F / V * (Tf - Tr) - (dH / rhoCp) * rA - UA / (rhoCp * V) * (Tr - Tc)
    return [dCrdt, dTrdt]


def cstr_solver(Cr, Tr, Tc, dTc, step_time=1, edo_solver_n_its=2):
    """Advance the reactor one control step; return (Cr, Tr, Tc) after the step.

    The coolant change dTc is capped to what the jacket can do in one step; the coolant is
    held at Tc + dTc over the first sub-interval only, then back at Tc, and finally
    Tc <- Tc + dTc (the reference's behaviour, kept so its baselines stay comparable).
    """
    if dTc is None or math.isnan(dTc):
        dTc = 0.0
    max_dTc = int(10 * step_time)
    if dTc > max_dTc:
        dTc = max_dTc
    elif dTc < -max_dTc:
        dTc = -max_dTc

    t = np.linspace(0, step_time, edo_solver_n_its + 1)
    u = np.zeros(edo_solver_n_its)
    u[0] = dTc

    z = [Cr, Tr]
    for i in range(edo_solver_n_its):
        y = odeint(cstr_model, z, [t[i], t[i + 1]], args=(Tc + u[i],))
        z = y[-1]

    return float(z[0]), float(z[1]), Tc + dTc
