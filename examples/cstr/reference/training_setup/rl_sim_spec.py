"""RLSimSpec for the CSTR: what the agent sees, what it sets and how it is rewarded.

Reference style: a hand-rolled normalisation (Tr/600, Cr/10, Cref/10, Tc/600) and the
reference reward exp(-|Cr - Cref|), with -10 added on termination.
"""

import math

import numpy as np


class RLSimSpec:
    """Maps the CSTR's states and actions to and from the Gymnasium agent."""

    def __init__(self):
        self.obs_state_len = 4
        self.action_len = 1
        self.sim_states_to_log = ["kpi_rms_conc_error", "Cr", "Tr", "Tc", "Cref"]

    def compute_reward_term_and_trun(self, states, terminated, truncated):
        """Reward: 1 when Cr is on the reference, less the further off; -10 on termination."""
        reward = math.exp(-abs(states["Cr"] - states["Cref"]))
        if terminated:
            reward -= 10
        return reward, terminated, truncated

    def sim_state_to_gym(self, states):
        """Observation: four states scaled into [-1, 1] (clipped)."""
        obs = np.array(
            [
                states["Tr"] / 600,
                states["Cr"] / 10,
                states["Cref"] / 10,
                states["Tc"] / 600,
            ],
            dtype=np.float32,
        )
        return np.clip(obs, -1, 1)

    def gym_action_to_sim(self, action):
        """Action in [-1, 1] -> coolant change in K (±10 per step)."""
        return {"Tc_adjust": float(action[0]) * 10}

    def get_gym_specs(self):
        """Observation and action vector lengths."""
        return self.obs_state_len, self.action_len

    def get_states_to_log(self):
        """States reported per episode during training."""
        return self.sim_states_to_log
