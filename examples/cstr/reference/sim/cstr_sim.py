"""CSTR simulation: references, noise, KPI and termination (reference style).

The references are rebuilt with ``scipy.interpolate.interp1d`` on every call and the
measurement noise comes from the global ``random`` module, as in the sample users copy.
"""

import math
import random

from scipy import interpolate
from sim.cstr_solver import cstr_solver

# Operating points: low conversion (start) and high conversion (target).
C_LOW, T_LOW = 8.5698, 311.2612
C_HIGH, T_HIGH = 2.0, 373.1311
# Measurement noise ranges (noise · U(-range, range)).
C_NOISE_RANGE = C_LOW - C_HIGH
T_NOISE_RANGE = T_HIGH - T_LOW


class CSTRSimulation:
    """One CSTR episode: plant state, references, noise and KPI."""

    def __init__(self):
        self.Cref_signal = 1
        self.noise = 0.0
        self.step_time = 1
        self.transition_start = 1
        self.edo_solver_n_its = 2
        self.reset()

    def reset(
        self,
        Cref_signal=1,
        noise_percentage=0,
        step_time=1,
        transition_start=None,
        edo_solver_n_its=2,
    ):
        self.Cref_signal = Cref_signal
        self.noise = noise_percentage / 100
        self.step_time = step_time
        self.edo_solver_n_its = edo_solver_n_its
        if transition_start is None:
            transition_start = 1
        if Cref_signal == 2:
            transition_start = 20
        elif Cref_signal == 3:
            transition_start = 40
        elif Cref_signal == 4:
            transition_start = 60
        self.transition_start = transition_start

        self.Cr = 8.5698
        self.Tr = 311.2639
        self.Tc = 305.0348 if Cref_signal == 6 else 292.0

        self.Cref, self.Tref = self.update_references(1)
        # The plant starts on the reference; the measurements carry the noise.
        self.Cr_no_noise = self.Cref
        self.Tr_no_noise = self.Tref
        self.Cr += self.noise * random.uniform(-C_NOISE_RANGE, C_NOISE_RANGE)
        self.Tr += self.noise * random.uniform(-T_NOISE_RANGE, T_NOISE_RANGE)

        self.it_time = 0
        self.rms = 0.0
        self.dTc = 0.0

    def update_references(self, t):
        """(Cref, Tref) at time t for the configured Cref_signal."""
        if self.Cref_signal in (1, 2, 3, 4):
            p1 = int(self.transition_start / self.step_time)
            p2 = p1 + int(26 / self.step_time)
            time = [0, p1, p2, 1000]
            f_c = interpolate.interp1d(time, [C_LOW, C_LOW, C_HIGH, C_HIGH])
            f_t = interpolate.interp1d(time, [T_LOW, T_LOW, T_HIGH, T_HIGH])
            k = t + p1 if self.Cref_signal == 1 else t
            return float(f_c(k)), float(f_t(k))
        if self.Cref_signal == 5:
            return C_LOW, T_LOW
        return C_HIGH, T_HIGH

    def step(self, dTc):
        self.Cref, self.Tref = self.update_references(self.it_time)

        c_noise = self.noise * random.uniform(-C_NOISE_RANGE, C_NOISE_RANGE)
        t_noise = self.noise * random.uniform(-T_NOISE_RANGE, T_NOISE_RANGE)

        Cr, Tr, Tc = cstr_solver(
            self.Cr_no_noise,
            self.Tr_no_noise,
            self.Tc,
            dTc,
            self.step_time,
            self.edo_solver_n_its,
        )
        self.dTc = Tc - self.Tc
        self.Tc = Tc
        self.Cr_no_noise = Cr
        self.Tr_no_noise = Tr
        self.Cr = Cr + c_noise
        self.Tr = Tr + t_noise

        self.it_time += self.step_time

        # Running RMS of the noise-free concentration error.
        n = int(self.it_time / self.step_time)
        error = (self.Cr_no_noise - self.Cref) ** 2
        self.rms = math.sqrt((self.rms**2 * max(n - 1, 0) + error) / max(n, 1))

    def get_states(self):
        return {
            "Cr_no_noise": self.Cr_no_noise,
            "Tr_no_noise": self.Tr_no_noise,
            "Cr": self.Cr,
            "Tr": self.Tr,
            "Tc": self.Tc,
            "Cref": self.Cref,
            "Tref": self.Tref,
            "Tc_adjust": self.dTc,
            "kpi_rms_conc_error": self.rms,
        }
