"""The peer anchor for ``bench/bridge.py``: DeepMind's dm-env-rpc serving the CSTR sim.

A minimal dm_env_rpc server in the pattern of dm_env_rpc's own example
(``examples/catch_environment.py``: one ``EnvironmentServicer.Process`` loop over the bidi
stream, ``SpecManager`` to pack/unpack tensors, one world per stream): one scalar float64 action
``Tc_adjust`` in [-10, 10] and the 9 CSTR states as 9 scalar float64 observations. As in the
example, the first step after a reset ignores its actions and returns the initial observations
(dm_env's FIRST step); the episode ends (TERMINATED) when the sim's ``termination()`` or
``truncation()`` is true. Resets use the bench's episode config, the episode index as seed.

The client side is dm-env-rpc's own ``DmEnvAdaptor`` (a ``dm_env.Environment``) over its
``Connection``; ``run_client`` measures it. Needs ``pip install dm-env-rpc`` (bench only, not a
simgym dependency).

    python bench/_bridge_dmenv.py serve (--unix PATH | --port 0) --address-file F [--parent-pid P]
    python bench/_bridge_dmenv.py client --address A --steps N   # prints JSON timings
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bridge_servers import episode_config, load_cstr, watch_parent, write_address

WORLD_NAME = "cstr"
ACTION = "Tc_adjust"


def available() -> str | None:
    """None when dm-env-rpc can be imported, else why not."""
    try:
        import dm_env_rpc.v1.dm_env_adaptor  # noqa: F401
    except Exception as exc:  # ImportError, or a protobuf/grpcio incompatibility
        return f"{type(exc).__name__}: {exc}"
    return None


def _specs(state_names: Sequence[str]) -> tuple[dict[int, Any], dict[int, Any]]:
    from dm_env_rpc.v1 import dm_env_rpc_pb2 as dm
    from dm_env_rpc.v1 import tensor_spec_utils

    action = dm.TensorSpec(name=ACTION, dtype=dm.DataType.DOUBLE)
    tensor_spec_utils.set_bounds(action, minimum=-10.0, maximum=10.0)
    observations = {
        uid: dm.TensorSpec(name=name, dtype=dm.DataType.DOUBLE)
        for uid, name in enumerate(state_names, start=1)
    }
    return {1: action}, observations


def make_servicer() -> Any:
    """A dm_env_rpc ``EnvironmentServicer`` hosting CSTR (one world per stream)."""
    from dm_env_rpc.v1 import dm_env_rpc_pb2 as dm
    from dm_env_rpc.v1 import dm_env_rpc_pb2_grpc, spec_manager
    from google.rpc import status_pb2

    cstr = load_cstr()
    action_specs, observation_specs = _specs(cstr.state_names)

    class CSTREnvironmentService(dm_env_rpc_pb2_grpc.EnvironmentServicer):
        def Process(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
            sim = None
            joined = False
            skip_next_frame = False
            episode = 0
            states: dict[str, float] = {}
            action_manager = spec_manager.SpecManager(action_specs)
            observation_manager = spec_manager.SpecManager(observation_specs)

            def reset() -> None:
                nonlocal episode, states, skip_next_frame
                assert sim is not None
                states = sim.reset(episode_config(episode), seed=episode)
                episode += 1
                skip_next_frame = True

            for request in request_iterator:
                response_wrapper = dm.EnvironmentResponse()
                try:
                    kind = request.WhichOneof("payload")
                    inner = getattr(request, kind)
                    if kind == "create_world":
                        if sim is not None:
                            raise RuntimeError("this server supports one world per stream")
                        sim = cstr()
                        reset()
                        response = dm.CreateWorldResponse(world_name=WORLD_NAME)
                    elif sim is None and kind != "leave_world":
                        raise RuntimeError(f"cannot {kind} when no world exists")
                    elif kind == "join_world":
                        if inner.world_name != WORLD_NAME:
                            raise RuntimeError(f"no world {inner.world_name!r}")
                        response = dm.JoinWorldResponse()
                        for uid, spec in action_specs.items():
                            response.specs.actions[uid].CopyFrom(spec)
                        for uid, spec in observation_specs.items():
                            response.specs.observations[uid].CopyFrom(spec)
                        joined = True
                    elif kind == "step":
                        if not joined:
                            raise RuntimeError("cannot step when world not joined")
                        assert sim is not None
                        if skip_next_frame:  # FIRST step: actions are ignored
                            skip_next_frame = False
                        else:
                            actions = action_manager.unpack(inner.actions)
                            states = sim.step({ACTION: float(actions.get(ACTION, 0.0))})
                        done = bool(sim.termination()) or bool(sim.truncation())
                        response = dm.StepResponse()
                        packed = observation_manager.pack(states)
                        for uid in inner.requested_observations:
                            response.observations[uid].CopyFrom(packed[uid])
                        response.state = (
                            dm.EnvironmentStateType.TERMINATED
                            if done
                            else dm.EnvironmentStateType.RUNNING
                        )
                        if done:
                            reset()
                    elif kind == "reset":
                        if not joined:
                            raise RuntimeError("cannot reset when world not joined")
                        reset()
                        response = dm.ResetResponse()
                        for uid, spec in action_specs.items():
                            response.specs.actions[uid].CopyFrom(spec)
                        for uid, spec in observation_specs.items():
                            response.specs.observations[uid].CopyFrom(spec)
                    elif kind == "reset_world":
                        reset()
                        response = dm.ResetWorldResponse()
                    elif kind == "leave_world":
                        joined = False
                        response = dm.LeaveWorldResponse()
                    elif kind == "destroy_world":
                        if joined:
                            raise RuntimeError("cannot destroy world when still joined")
                        sim = None
                        response = dm.DestroyWorldResponse()
                    else:
                        raise RuntimeError(f"unhandled message: {kind}")
                    getattr(response_wrapper, kind).CopyFrom(response)
                except Exception as exc:  # reported in-band, as dm_env_rpc servers do
                    response_wrapper.error.CopyFrom(status_pb2.Status(message=str(exc)))
                yield response_wrapper

    return CSTREnvironmentService()


def serve(target: str, address_file: str) -> None:
    import grpc
    from dm_env_rpc.v1 import dm_env_rpc_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    dm_env_rpc_pb2_grpc.add_EnvironmentServicer_to_server(make_servicer(), server)
    port = server.add_insecure_port(target)
    server.start()
    write_address(address_file, target if target.startswith("unix:") else f"127.0.0.1:{port}")
    server.wait_for_termination()


class DmClient:
    """dm-env-rpc's own client stack: ``Connection`` + ``DmEnvAdaptor`` (dm_env API)."""

    def __init__(self, address: str) -> None:
        import grpc
        from dm_env_rpc.v1 import connection, dm_env_adaptor

        self._channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self._channel).result(timeout=30)
        self._connection = connection.Connection(self._channel)
        self.env, self._world = dm_env_adaptor.create_and_join_world(
            self._connection, create_world_settings={}, join_world_settings={}
        )
        self.env.reset()

    def run(self, steps: int, actions: Sequence[float], offset: int = 0) -> int:
        """``steps`` env steps (resets at episode ends are extra calls, not counted)."""
        env = self.env
        n_actions = len(actions)
        for n in range(steps):
            timestep = env.step({ACTION: actions[(offset + n) % n_actions]})
            if timestep.last():
                env.reset()
        return steps

    def close(self) -> None:
        from dm_env_rpc.v1 import dm_env_rpc_pb2 as dm

        try:
            self.env.close()  # leave world
            self._connection.send(dm.DestroyWorldRequest(world_name=self._world))
        finally:
            self._connection.close()
            self._channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("serve", "client"))
    parser.add_argument("--unix")
    parser.add_argument("--port", type=int)
    parser.add_argument("--address-file")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--address")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--actions", help="JSON list of Tc_adjust values to cycle through")
    args = parser.parse_args()
    if args.mode == "serve":
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        if args.parent_pid:
            watch_parent(args.parent_pid)
        if not args.address_file:
            parser.error("serve needs --address-file")
        if args.unix:
            target = f"unix:{Path(args.unix).resolve()}"
        elif args.port is not None:
            target = f"127.0.0.1:{args.port}"
        else:
            parser.error("serve needs --unix or --port")
        serve(target, args.address_file)
        return
    if not args.address:
        parser.error("client needs --address")
    actions = json.loads(args.actions) if args.actions else [0.0]
    client = DmClient(args.address)
    try:
        client.run(min(200, args.steps), actions)  # warm-up
        cpu0, t0 = time.process_time(), time.perf_counter()
        steps = client.run(args.steps, actions)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        client.close()
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "steps": steps}))


if __name__ == "__main__":
    main()
