"""Training metrics: the names users chart, to MLflow, ``metrics.csv`` and a learning-curve PNG.

RLlib 2.60's result keys differ from what Azure ML users chart; ``extract``
maps them explicitly (``episode_return_mean`` → ``episode_reward_mean``,
``num_episodes_lifetime`` → ``episodes_total``, ...).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("simgym.tracking")

# Public metric name → path in an RLlib 2.60 result dict.
RESULT_KEYS: dict[str, tuple[str, ...]] = {
    "episode_reward_mean": ("env_runners", "episode_return_mean"),
    "episode_len_mean": ("env_runners", "episode_len_mean"),
    "episodes_total": ("env_runners", "num_episodes_lifetime"),
    "env_steps_total": ("env_runners", "num_env_steps_sampled_lifetime"),
    "sim_errors": ("env_runners", "sim_errors"),
    "sim_nonfinite": ("env_runners", "sim_nonfinite"),
    "sim_timeouts": ("env_runners", "sim_timeouts"),
    "sim_step_ms": ("env_runners", "sim_step_ms"),
    "bridge_step_ms": ("env_runners", "bridge_step_ms"),
}


def _get(result: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = result
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    try:
        value = float(node)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def extract(result: Mapping[str, Any], log_states: list[str]) -> dict[str, float]:
    """The public metrics of one training iteration (absent values are left out)."""
    metrics: dict[str, float] = {}
    for name, path in RESULT_KEYS.items():
        value = _get(result, path)
        if value is not None:
            metrics[name] = value
    for state in log_states:
        for kind in ("state_mean", "state_final"):
            value = _get(result, ("env_runners", f"{kind}/{state}"))
            if value is not None:
                metrics[f"{kind}_{state}"] = value
    return metrics


class Tracker:
    """Writes each iteration's metrics to MLflow and ``metrics.csv``.

    Args:
        run_dir: The run folder.
        experiment: MLflow experiment name.
        tracking_uri: MLflow URI; default ``$MLFLOW_TRACKING_URI`` (Azure ML sets it in
            jobs), else ``sqlite:///<run_dir>/mlflow.db``.
        run_name: MLflow run name.
        resume_run_id: Continue this MLflow run (on ``--resume``).
        keep_until: On ``--resume``: the checkpoint's iteration. Rows of ``metrics.csv``
            after it belong to iterations the resumed run repeats, so they are dropped
            (MLflow keeps its points; the resumed run logs those steps again).
    """

    def __init__(
        self,
        run_dir: Path,
        experiment: str,
        tracking_uri: str | None = None,
        run_name: str | None = None,
        resume_run_id: str | None = None,
        keep_until: int | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.csv_path = run_dir / "metrics.csv"
        local = f"sqlite:///{run_dir.resolve()}/mlflow.db"
        env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.uri = tracking_uri or env_uri or local
        # An explicit client, not mlflow's fluent API: mlflow.set_tracking_uri() exports
        # MLFLOW_TRACKING_URI into this process, so a second training in the same process
        # would log into the first one's store.
        self._client = MlflowClient(tracking_uri=self.uri)
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        elif self.uri == local:
            # A sqlite store puts artifacts under ./mlruns of whatever the cwd is: keep
            # them in the run folder instead.
            artifacts = (run_dir / "mlartifacts").resolve().as_uri()
            experiment_id = self._client.create_experiment(experiment, artifact_location=artifacts)
        else:
            experiment_id = self._client.create_experiment(experiment)
        # Inside an Azure ML job the service creates the run and exports its id: log into it
        # (and leave ending it to the service).
        job_run = os.environ.get("MLFLOW_RUN_ID") if self.uri == env_uri else None
        self._owns_run = not (job_run and not resume_run_id)
        run_id = resume_run_id or job_run
        if run_id:
            self._client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            self.run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id
        self._rows: list[dict[str, float]] = self._read_csv()
        if keep_until is not None:
            kept = [r for r in self._rows if r.get("iteration", 0) <= keep_until]
            if len(kept) != len(self._rows):
                self._rows = kept
                self._write_csv()

    def _read_csv(self) -> list[dict[str, float]]:
        if not self.csv_path.exists():
            return []
        with self.csv_path.open() as f:
            return [
                {k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)
            ]

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings (stringified, MLflow's limit)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in params.items()]
        # MLflow takes at most 100 params per batch.
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record one iteration (x-axis: the training step)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )
        self._rows.append({"iteration": float(step), **metrics})
        self._write_csv()

    def _write_csv(self) -> None:
        # Rewritten whole (atomically): a metric first seen late adds a column.
        columns = sorted({k for row in self._rows for k in row} - {"iteration"})
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["iteration", *columns])
            writer.writeheader()
            for row in self._rows:
                writer.writerow(row)
        tmp.replace(self.csv_path)

    @property
    def rows(self) -> list[dict[str, float]]:
        """Every iteration logged so far in this run folder (including before a resume)."""
        return list(self._rows)

    def log_artifact(self, path: Path) -> None:
        """Attach a file to the MLflow run; failures are logged, never fatal."""
        try:
            self._client.log_artifact(self.run_id, str(path))
        except Exception as exc:
            log.warning("could not attach %s to MLflow: %s", path.name, exc)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run."""
        if self._owns_run or status != "FINISHED":
            self._client.set_terminated(self.run_id, status=status)


def plot_learning_curve(rows: list[dict[str, float]], path: Path, title: str) -> Path | None:
    """Episode reward and length against env steps, as a PNG; None when there is no data."""
    points = [r for r in rows if "episode_reward_mean" in r]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = "env_steps_total" if all("env_steps_total" in r for r in points) else "iteration"
    x = [r[x_key] for r in points]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(x, [r["episode_reward_mean"] for r in points], color="tab:blue")
    ax1.set_ylabel("episode_reward_mean")
    ax1.grid(alpha=0.3)
    ax1.set_title(title)
    ax2.plot(x, [r.get("episode_len_mean", math.nan) for r in points], color="tab:orange")
    ax2.set_ylabel("episode_len_mean")
    ax2.set_xlabel("env steps" if x_key == "env_steps_total" else "iteration")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
