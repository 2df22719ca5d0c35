"""µs per action: the exported ONNX agent (onnxruntime) vs the RLlib module (torch).

    python bench/inference.py runs/<run>                 # exports to a temp folder first
    python bench/inference.py runs/<run> --agent agent/  # an existing export of that run

Paths timed, single state per call unless noted:

* ``agent.act``        — ``gymclient.agent``: dict of named states in, dict of actions out
                         (input checks; for one state the spec's arithmetic in Python around
                         ``policy.onnx``): what users call.
* ``agent.onnx session.run`` — the bare onnxruntime call of the full graph, prepared arrays.
* ``policy.onnx session.run`` — the network alone (what ``agent.act`` runs for one state
                         around its Python arithmetic): the floor.
* ``rllib module``     — ``forward_inference`` of the RLlib module in torch on an already
                         encoded observation (mean of the action distribution), no env code.
* ``rllib + codec``    — the same plus the spec's codec (encode states, decode the action):
                         the torch equivalent of ``agent.act``.
* batched (1024 states per call) for both, per state.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import best_us  # beside this file, on sys.path as its folder


def per_call_us(fn: Callable[[], object], seconds: float = 1.5) -> float:
    """Best over 15 rounds of the mean µs per call (``seconds`` in all; ``_timing.best_us``)."""
    return best_us(fn, seconds, repeats=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (its last checkpoint)")
    parser.add_argument("--agent", type=Path, help="an export of that run (default: export now)")
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per path")
    args = parser.parse_args()

    import torch

    from gymclient.agent import load_agent
    from gymclient.codec import DeclarativeCodec
    from launcher.export import (
        export_run,
        input_states,
        load_module,
        load_run_spec,
        resolve_checkpoint,
        sample_states,
    )

    torch.set_num_threads(1)
    spec = load_run_spec(args.run)
    agent_dir = args.agent
    if agent_dir is None:
        agent_dir = Path(tempfile.mkdtemp(prefix="simgym-bench-")) / "agent"
        export_run(args.run, agent_dir, samples=200)
    agent = load_agent(agent_dir)
    module = load_module(resolve_checkpoint(args.run, None))
    names = input_states(spec)
    rng = np.random.default_rng(0)
    batch = sample_states(spec, 1024, rng)
    # States used only inside expressions are drawn over [-10, 10]; the first sample the
    # expressions can take (no log of a negative) is timed — what a real plant sends. Others
    # go through agent.onnx instead of the Python path; their share is printed.
    rows_ = [{n: float(batch[n][i]) for n in names} for i in range(len(batch[names[0]]))]
    takes = [
        agent._core is not None and agent._core([r[n] for n in names]) is not None for r in rows_
    ]
    one = rows_[takes.index(True)] if any(takes) else rows_[0]
    print(
        f"single-state path: {'Python + policy.onnx' if any(takes) else 'agent.onnx'} "
        f"({sum(takes)}/{len(takes)} random samples take the Python path; the others agent.onnx)"
    )
    feed = {n: np.array([one[n]]) for n in names}
    obs = torch.zeros((1, len(spec.observations)), dtype=torch.float32)
    codec = DeclarativeCodec(
        spec.model_copy(update={"reward": None, "log_states": []}), names, list(spec.actions)
    )
    n_act = len(spec.actions)
    values = [one[n] for n in names]

    def rllib_module() -> object:
        with torch.no_grad():
            return module.forward_inference({"obs": obs})["action_dist_inputs"][0, :n_act]

    def rllib_codec() -> object:
        o, _ = codec.encode(one, values)
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.from_numpy(o[None, :])})
        return codec.decode(out["action_dist_inputs"][0, :n_act].numpy())

    big_obs = torch.from_numpy(codec.encode_batch(np.stack([batch[n] for n in names], axis=1))[0])

    def rllib_batch() -> object:
        with torch.no_grad():
            return module.forward_inference({"obs": big_obs})

    session_run = agent._session.run
    core_rows = []
    if (Path(agent_dir) / "policy.onnx").is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        core = ort.InferenceSession(
            str(Path(agent_dir) / "policy.onnx"), options, providers=["CPUExecutionProvider"]
        )
        core_obs = {"obs": np.zeros((1, len(spec.observations)), np.float32)}
        core_rows.append(
            (
                "policy.onnx session.run (bare network)",
                per_call_us(lambda: core.run(None, core_obs), args.seconds),
            )
        )
    rows = [
        ("agent.act (onnxruntime)", per_call_us(lambda: agent.act(one), args.seconds)),
        ("agent.onnx session.run", per_call_us(lambda: session_run(None, feed), args.seconds)),
        *core_rows,
        ("rllib module (torch)", per_call_us(rllib_module, args.seconds)),
        ("rllib + codec (torch)", per_call_us(rllib_codec, args.seconds)),
        ("agent.act_batch, per state", per_call_us(lambda: agent.act_batch(batch)) / 1024),
        ("rllib module batch, per state", per_call_us(rllib_batch) / 1024),
    ]
    load = os.getloadavg()[0]
    print(f"policy: {len(spec.observations)} observations -> {n_act} action(s); "
          f"{sum(p.numel() for p in module.parameters())} parameters; "
          f"load average {load:.2f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'path':40s} {'µs per action':>14s}")
    for name, us in rows:
        print(f"{name:40s} {us:14.2f}")
    target = rows[0][1]
    print(f"single-state agent.act: {target:.1f} µs ({'within' if target <= 20 else 'over'} "
          "the 20 µs target)")  # fmt: skip


if __name__ == "__main__":
    main()
