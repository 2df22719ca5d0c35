"""launcher: the ``simgym`` command — check a sim integration, train, evaluate, export, submit.

- ``cli`` (argument parsing only; ``cli_agent`` and ``cli_aml`` add their commands)
- ``check``: ``simgym check`` — start or reach the sim server, run the conformance kit, show
  the report
- ``trainspec``: the training spec, validated at load time
- ``sims``: ``start_sims``, the one way to start a spec's sim servers; ``sidecars``: the
  supervised pool it starts (restarts with a budget, error lines from the logs)
- ``train``: ``simgym train`` — prepare, resume, the loop, stop rules, wrap-up;
  ``rllib_setup``: the env creator, callbacks and RLlib config; ``tracking``: metrics to
  MLflow and ``metrics.csv``; ``progress``: the terminal view
- ``node``: ``simgym node``, one node of a multi-node training; ``placement``: which sims a
  node's env runners step
- ``aml``: Azure ML submission (plan, image, workspace)
- ``evaluate``: agent and baselines on fixed scenarios; ``export``: the policy as ONNX
- ``serve``: an exported agent behind Bonsai's exported-brain HTTP API (``cli_serve``)
"""
