"""A Bonsai simulator connector for the cart-pole sim, written as Bonsai's SDK samples are.

Run it against any Bonsai-compatible endpoint (simgym's, see README.md):

    SIM_API_HOST=http://127.0.0.1:PORT SIM_WORKSPACE=any SIM_ACCESS_KEY=TOKEN python main.py

It registers one simulator session, then loops on ``advance``: it posts the sim's state and
``halted`` flag and does what the returned event says (idle, start an episode with a config,
step with an action, finish, unregister). ``CartPoleSession`` alone is what simgym can also
host in process, without the SDK's loop: ``simserver main.py:CartPoleSession``.
"""

from __future__ import annotations

import time
from typing import Any

from microsoft_bonsai_api.simulator.client import BonsaiClient, BonsaiClientConfig
from microsoft_bonsai_api.simulator.generated.models import (
    SimulatorInterface,
    SimulatorSessionResponse,
    SimulatorState,
)
from sim.cartpole import CartPole

CONFIG_KEYS = (
    "cart_mass",
    "pole_mass",
    "pole_length",
    "initial_cart_position",
    "initial_cart_velocity",
    "initial_pole_angle",
    "initial_angular_velocity",
    "target_pole_position",
)


def _struct(*fields: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A Bonsai interface ``Struct`` type of ``Number`` fields."""
    return {
        "category": "Struct",
        "fields": [{"name": n, "type": {"category": "Number", **t}} for n, t in fields],
    }


class CartPoleSession:
    """The sim as the Bonsai platform sees it: episodes started with a config, stepped with
    an action dict, observed through ``get_state()`` and ``halted()``.

    Args:
        env_name: The name the simulator registers under.
        verbose: Print every event's state.
    """

    def __init__(self, env_name: str = "CartPole", verbose: bool = False) -> None:
        self.simulator = CartPole()
        self.env_name = env_name
        self.verbose = verbose
        self.config: dict[str, Any] = {}

    def get_interface(self, simulator_context: str = "") -> SimulatorInterface:
        """What this simulator registers: its name and its state, action and config types."""
        state_names = list(self.get_state())
        description = {
            "state": _struct(*((n, {}) for n in state_names)),
            "action": _struct(("command", {"start": -1, "stop": 1})),
            "config": _struct(*((n, {}) for n in CONFIG_KEYS)),
        }
        return SimulatorInterface(
            name=self.env_name,
            timeout=60,
            simulator_context=simulator_context,
            description=description,
        )

    def get_state(self) -> dict[str, float]:
        """The sim's current values, plus the distance the pole's tip is from its target."""
        state = dict(self.simulator.state)
        state["distance_to_target"] = state["target_pole_position"] - state["pole_tip_position"]
        return state

    def halted(self) -> bool:
        """Whether the episode cannot go on: the pole fell or the cart left the track."""
        return self.simulator.halted()

    def episode_start(self, config: dict[str, Any] | None = None) -> None:
        """Start an episode from the config's keys (any of ``CONFIG_KEYS``; others ignored)."""
        self.config = dict(config or {})
        self.simulator.reset(**{k: v for k, v in self.config.items() if k in CONFIG_KEYS})

    def episode_step(self, action: dict[str, Any]) -> None:
        """Apply one action: ``{"command": c}`` with c in [-1, 1]."""
        self.simulator.step(action["command"])


def register(
    client: BonsaiClient, config: BonsaiClientConfig, interface: SimulatorInterface
) -> tuple[SimulatorSessionResponse, int]:
    """Register a simulator session; its first sequence id is 1."""
    session = client.session.create(workspace_name=config.workspace, body=interface)
    print(f"registered simulator session {session.session_id}", flush=True)
    return session, 1


def main() -> None:
    """Register, then run the platform's events until it unregisters the sim (or Ctrl+C)."""
    config = BonsaiClientConfig()
    client = BonsaiClient(config)
    sim = CartPoleSession()
    session, sequence_id = register(client, config, sim.get_interface(config.simulator_context))
    try:
        while True:
            state = SimulatorState(
                sequence_id=sequence_id, state=sim.get_state(), halted=sim.halted()
            )
            event = client.session.advance(
                workspace_name=config.workspace, session_id=session.session_id, body=state
            )
            sequence_id = event.sequence_id
            if sim.verbose:
                print(f"{event.type}: {state.state}", flush=True)
            if event.type == "Idle":
                time.sleep(event.idle.callback_time)
            elif event.type == "EpisodeStart":
                sim.episode_start(event.episode_start.config)
            elif event.type == "EpisodeStep":
                sim.episode_step(event.episode_step.action)
            elif event.type == "EpisodeFinish":
                pass
            elif event.type == "Unregister":
                print(f"unregistered by the platform: {event.unregister.details}", flush=True)
                return
    except KeyboardInterrupt:
        pass
    finally:
        try:
            client.session.delete(workspace_name=config.workspace, session_id=session.session_id)
        except Exception as exc:  # the platform may be gone already
            print(f"could not unregister: {exc}", flush=True)


if __name__ == "__main__":
    main()
