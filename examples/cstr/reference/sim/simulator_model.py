"""SimulatorModel for the CSTR, in the shape the reference Gymnasium sample expects.

Run from ``examples/cstr/reference`` (the helpers are imported as ``sim.<module>``):

    simserver sim/simulator_model.py:SimulatorModel --unix cstr.sock
"""

from sim.cstr_sim import CSTRSimulation


class SimulatorModel:
    """Wraps CSTRSimulation with the reset/step/termination/truncation interface."""

    def __init__(self):
        self.sim = CSTRSimulation()
        self.config = {}

    @property
    def sim_name(self):
        return "CSTR"

    def reset(self, config):
        """Restart with a scenario config; return all states."""
        self.config = dict(config or {})
        self.sim.reset(
            Cref_signal=self.config.get("Cref_signal", 1),
            noise_percentage=self.config.get("noise_percentage", 0),
            step_time=self.config.get("step_time", 1),
            transition_start=self.config.get("transition_start"),
            edo_solver_n_its=self.config.get("edo_solver_n_its", 2),
        )
        return self.sim.get_states()

    def step(self, action: dict):
        """Apply one coolant change (Tc_adjust, K) and return all states."""
        self.sim.step(float(action["Tc_adjust"]))
        return self.sim.get_states()

    def termination(self):
        """Failure: runaway, negative concentration, impossible coolant move or too cold."""
        s = self.sim
        if s.Tr >= 400:
            print(f"Terminating: reactor temperature {s.Tr:.2f} K >= 400 K (thermal runaway)")
            return True
        if s.Cr <= 0:
            print(f"Terminating: concentration {s.Cr:.4f} <= 0")
            return True
        if abs(s.dTc) > 10 * s.step_time:
            print(f"Terminating: coolant change {s.dTc:.2f} K exceeds the jacket's limit")
            return True
        if s.Tc < 50:
            print(f"Terminating: coolant temperature {s.Tc:.2f} K < 50 K")
            return True
        return False

    def truncation(self):
        """The episode's time budget (90 minutes) is used up."""
        return self.sim.it_time > 90
