"""The MLflow tracker: each run folder gets its own store, however many trainings a process runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="tracking needs the train extra (installed by make)")

from launcher.tracking import Tracker


def _runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("select name, status from runs"))


def test_two_trackers_in_one_process_keep_to_their_own_stores(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dirs = [tmp_path / "a", tmp_path / "b"]
    for i, run_dir in enumerate(dirs):
        run_dir.mkdir()
        tracker = Tracker(run_dir, "exp", run_name=f"run{i}")
        tracker.log_params({"lr": 0.1})
        tracker.log(1, {"episode_reward_mean": float(i)})
        tracker.close()
    for i, run_dir in enumerate(dirs):
        assert _runs(run_dir / "mlflow.db") == [(f"run{i}", "FINISHED")]
        assert (run_dir / "metrics.csv").read_text().splitlines()[1] == f"1.0,{float(i)}"


def test_resume_continues_the_same_run_and_an_env_uri_is_honoured(tmp_path, monkeypatch):
    store = tmp_path / "shared.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    first = Tracker(tmp_path, "exp", run_name="r")
    first.log(1, {"episode_reward_mean": 1.0})
    first.close("FAILED")
    again = Tracker(tmp_path, "exp", resume_run_id=first.run_id)
    again.log(2, {"episode_reward_mean": 2.0})
    again.close()
    assert _runs(store) == [("r", "FINISHED")]
    assert not (tmp_path / "mlflow.db").exists()
    assert [r["iteration"] for r in again.rows] == [1.0, 2.0]


def test_resume_from_a_checkpoint_drops_the_rows_after_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = Tracker(tmp_path, "exp", run_name="r")
    for step in (1, 2, 3, 4, 5):
        first.log(step, {"env_steps_total": 100.0 * step})
    first.close("FAILED")  # killed after iteration 5; the last checkpoint was at 3
    again = Tracker(tmp_path, "exp", resume_run_id=first.run_id, keep_until=3)
    assert [r["iteration"] for r in again.rows] == [1.0, 2.0, 3.0]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4  # header + 3 rows
    again.log(4, {"env_steps_total": 410.0})
    again.close()
    assert [r["iteration"] for r in again.rows] == [1.0, 2.0, 3.0, 4.0]
    assert again.rows[-1]["env_steps_total"] == 410.0
    assert _runs(tmp_path / "mlflow.db") == [("r", "FINISHED")]
