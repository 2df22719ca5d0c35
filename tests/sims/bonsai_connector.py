"""A Bonsai SDK connector for the tests: the toy integrator behind the real SDK's loop.

Written as Bonsai's sample connectors are (register, then ``advance`` forever, dispatching on
the event), with knobs for the tests, from the command line:

    SIM_API_HOST=http://127.0.0.1:PORT SIM_WORKSPACE=w SIM_ACCESS_KEY=key \\
        python bonsai_connector.py [--sleep S] [--die-at N] [--times FILE] [--describe]
                                   [--timeout S] [--name NAME]

--sleep: seconds each step takes; --die-at: SIGKILL its own process at that step (counted
over its life); --times: append "start end" (time.time) of each step to FILE; --describe:
declare the states, action and config in the SimulatorInterface. It exits when the endpoint
unregisters it or cannot be reached (its last line says why).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from microsoft_bonsai_api.simulator.client import BonsaiClient, BonsaiClientConfig
from microsoft_bonsai_api.simulator.generated.models import SimulatorInterface, SimulatorState


class Toy:
    """x += u per step; halted when |x| > 10."""

    def __init__(self) -> None:
        self.x, self.t = 0.0, 0

    def episode_start(self, config: dict[str, Any]) -> None:
        self.x, self.t = float((config or {}).get("x0", 0.0)), 0

    def episode_step(self, action: dict[str, Any]) -> None:
        self.x += float(action["u"])
        self.t += 1

    def get_state(self) -> dict[str, float]:
        return {"x": self.x, "t": float(self.t)}

    def halted(self) -> bool:
        return abs(self.x) > 10


def _struct(*names: str) -> dict[str, Any]:
    return {
        "category": "Struct",
        "fields": [{"name": n, "type": {"category": "Number"}} for n in names],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--die-at", type=int, default=0)
    parser.add_argument("--times", default="")
    parser.add_argument("--describe", action="store_true")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--name", default="toy")
    args = parser.parse_args()

    config = BonsaiClientConfig(argv=None)
    client = BonsaiClient(config)
    sim = Toy()
    description = None
    if args.describe:
        description = {"state": _struct("x", "t"), "action": _struct("u"), "config": _struct("x0")}
    interface = SimulatorInterface(
        name=args.name,
        timeout=args.timeout,
        simulator_context=config.simulator_context,
        description=description,
    )
    session = client.session.create(workspace_name=config.workspace, body=interface)
    print(f"registered {session.session_id}", flush=True)
    sequence_id, steps = 1, 0
    while True:
        state = SimulatorState(sequence_id=sequence_id, state=sim.get_state(), halted=sim.halted())
        try:
            event = client.session.advance(
                workspace_name=config.workspace, session_id=session.session_id, body=state
            )
        except Exception as exc:
            print(f"advance failed: {type(exc).__name__}", flush=True)
            sys.exit(1)
        sequence_id = event.sequence_id
        if event.type == "Idle":
            time.sleep(event.idle.callback_time)
        elif event.type == "EpisodeStart":
            sim.episode_start(event.episode_start.config)
        elif event.type == "EpisodeStep":
            steps += 1
            if steps == args.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            start = time.time()
            time.sleep(args.sleep)
            sim.episode_step(event.episode_step.action)
            if args.times:
                with open(args.times, "a") as f:
                    f.write(f"{start} {time.time()}\n")
        elif event.type == "EpisodeFinish":
            pass
        elif event.type == "Unregister":
            print(f"unregistered: {event.unregister.details}", flush=True)
            return


if __name__ == "__main__":
    main()
