"""``bench/concurrency.py``'s sims behind the real Bonsai SDK: a connector, as Bonsai's samples are.

    SIM_API_HOST=http://127.0.0.1:PORT SIM_WORKSPACE=bench SIM_ACCESS_KEY=KEY \\
        python bench/_concurrency_bonsai.py sleep|cpu [--delay 0.02]

Registers (declaring the state ``t`` and the action ``u``), then ``advance``s until the
endpoint unregisters it; each ``EpisodeStep`` runs one step of ``Sleeping`` or ``Spinning``.
"""

from __future__ import annotations

import argparse
import time

from _concurrency_sim import Sleeping, Spinning  # beside this file, on sys.path as its folder
from microsoft_bonsai_api.simulator.client import BonsaiClient, BonsaiClientConfig
from microsoft_bonsai_api.simulator.generated.models import SimulatorInterface, SimulatorState


def _struct(name: str) -> dict[str, object]:
    return {"category": "Struct", "fields": [{"name": name, "type": {"category": "Number"}}]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["sleep", "cpu"])
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    sim = (Sleeping if args.kind == "sleep" else Spinning)(args.delay)
    config = BonsaiClientConfig(argv=None)
    client = BonsaiClient(config)
    interface = SimulatorInterface(
        name=f"bench-{args.kind}",
        timeout=600,
        simulator_context=config.simulator_context,
        description={"state": _struct("t"), "action": _struct("u")},
    )
    session = client.session.create(workspace_name=config.workspace, body=interface)
    sequence_id, state = 1, sim.reset({})
    while True:
        event = client.session.advance(
            workspace_name=config.workspace,
            session_id=session.session_id,
            body=SimulatorState(sequence_id=sequence_id, state=state, halted=False),
        )
        sequence_id = event.sequence_id
        if event.type == "Idle":
            time.sleep(event.idle.callback_time)
        elif event.type == "EpisodeStart":
            state = sim.reset({})
        elif event.type == "EpisodeStep":
            state = sim.step(event.episode_step.action)
        elif event.type == "Unregister":
            return


if __name__ == "__main__":
    main()
