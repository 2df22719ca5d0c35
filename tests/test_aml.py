"""Azure ML submission with the real azure-ai-ml SDK, offline; and simgym's Docker files.

Nothing here reaches Azure: the dry run contacts nothing, the no-credentials case runs in a
network namespace with no network at all, and submission is captured by handing the real
``MLClient`` a fake credential and intercepting its create/get calls (the SDK boundary).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("azure.ai.ml", reason="needs the aml extra (installed by make)")

from azure.ai.ml import load_compute, load_environment, load_job
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError

from gymclient.errors import SpecError
from launcher import aml

from .conftest import REPO

SIMGYM = str(Path(sys.executable).parent / "simgym")
CSTR = REPO / "examples" / "cstr"


def _project(tmp_path: Path, aml_section: dict | None = None, **train_updates) -> Path:
    """A user's project folder: the CSTR sim, its env spec and a training spec."""
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    for name in ("sim.py", "spec.yaml", "reward.py"):
        shutil.copy2(CSTR / name, project / name)
    train = yaml.safe_load((CSTR / "train.yaml").read_text())
    train.update(train_updates)
    if aml_section is not None:
        train["aml"] = aml_section
    (project / "train.yaml").write_text(yaml.safe_dump(train))
    (project / "requirements.txt").write_text("scipy>=1.11\n")
    return project / "train.yaml"


def _run(*args: str, cwd: Path | None = None, netns: bool = False) -> subprocess.CompletedProcess:
    cmd = [SIMGYM, *args]
    if netns:
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


SUBMIT = ["--compute", "cpu-cluster", "--vm-size", "STANDARD_D4S_V3", "--nodes", "2",
          "--environment", "simgym-cstr", "--experiment", "cstr-impala", "--max-run-time", "2h"]  # fmt: skip


# ----------------------------------------------------------------------------- dry run


def test_dry_run_round_trips_through_the_sdk_loaders(tmp_path):
    spec = _project(tmp_path, stop={"max_time": "10m"})
    out = tmp_path / "out"
    r = _run(
        "submit", str(spec), "--workspace-config", "config.json", *SUBMIT, "--dry-run", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.glob("*.yml")} == {"job.yml", "environment.yml", "compute.yml"}

    job = load_job(out / "job.yml")
    assert job.type == "command"  # load_job gives the SDK's Command builder for a command job
    assert job.resources.instance_count == 2 and job.resources.shm_size == "8g"
    assert job.distribution.type == "mpi" and job.distribution.process_count_per_instance == 1
    assert job.limits.timeout == 7200
    assert job.experiment_name == "cstr-impala"
    assert job.compute == "cpu-cluster"
    assert job.environment == "simgym-cstr@latest"
    # The job's code is the user's project folder, and its command is the node bootstrap.
    assert Path(job.code) == spec.parent
    args = shlex.split(job.command)
    assert args[:3] == ["simgym", "node", "train.yaml"]
    assert args[args.index("--output") + 1] == "outputs"
    assert args[args.index("--experiment") + 1] == "cstr-impala"
    # The spec's stop.max_time (10m) fits in the job's 2 h: training keeps it.
    assert args[args.index("--max-time") + 1] == "600s"
    assert re.fullmatch(r"[0-9a-f]{64}", job.environment_variables["SIMGYM_RAY_TOKEN"])

    env = load_environment(out / "environment.yml")
    assert env.name == "simgym-cstr" and env.image is None
    context = Path(env.build.path)
    assert env.build.dockerfile_path == "Dockerfile"
    assert (context / "Dockerfile").read_text() == (REPO / "docker/train.Dockerfile").read_text()
    assert (context / "install.sh").exists() and (context / "constraints.txt").exists()
    assert (context / "simgym-src" / "pyproject.toml").exists()
    assert (context / "simgym-src" / "launcher" / "node.py").exists()
    assert not list(context.rglob("__pycache__"))

    compute = load_compute(out / "compute.yml")
    assert compute.name == "cpu-cluster" and compute.size == "STANDARD_D4S_V3"
    assert compute.min_instances == 0 and compute.max_instances == 2  # scales to zero
    assert compute.idle_time_before_scale_down == 600 and compute.tier == "dedicated"
    assert "az ml job create -f" in r.stdout


def test_spec_aml_section_is_used_and_the_command_line_wins(tmp_path):
    spec = _project(
        tmp_path,
        aml_section={"compute": "gpu-pool", "vm_size": "STANDARD_NC4AS_T4_V3", "nodes": 3,
                     "gpu": True, "environment": "cstr-gpu", "max_run_time": "30m",
                     "requirements": "requirements.txt", "environment_variables": {"X": "1"}},
        stop={"max_time": "10m"},
    )  # fmt: skip
    out = tmp_path / "out"
    r = _run("submit", str(spec), "--nodes", "4", "--dry-run", str(out))
    assert r.returncode == 0, r.stderr
    job = load_job(out / "job.yml")
    assert job.resources.instance_count == 4  # command line over the spec
    assert job.compute == "gpu-pool" and job.limits.timeout == 1800
    assert job.environment_variables["X"] == "1"
    args = shlex.split(job.command)
    # 10 min of training asked, 30 min allowed: keep the 10 min.
    assert args[args.index("--max-time") + 1] == "600s"
    env = load_environment(out / "environment.yml")
    context = Path(env.build.path)
    assert "cuda" in (context / "Dockerfile").read_text()
    assert (context / "requirements.txt").read_text() == "scipy>=1.11\n"
    assert load_compute(out / "compute.yml").max_instances == 4


def test_training_time_is_capped_below_the_job_limit(tmp_path):
    spec = _project(tmp_path, stop={"max_time": "3h"})
    plan = aml.plan_submission(spec, {"max_run_time": "1h", "image": "myacr.azurecr.io/sim:1"})
    args = shlex.split(plan.job.command)
    assert args[args.index("--max-time") + 1] == "3240s"  # 1 h less 10 %, for wrap-up
    assert any("past the job's limit" in n for n in plan.notes)
    assert plan.environment.image == "myacr.azurecr.io/sim:1" and plan.environment.build is None


def test_bad_settings_are_one_line_errors(tmp_path):
    spec = _project(tmp_path, aml_section={"nodez": 2})
    with pytest.raises(SpecError, match=r"aml\.nodez: unknown key"):
        aml.plan_submission(spec, {})
    spec = _project(tmp_path)
    r = _run("submit", str(spec), "--max-run-time", "soon", "--dry-run", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "simgym: error: --max-run-time: 'soon' is not a duration (examples: 90, 90s, 10m, 2h)"
    )
    r = _run("submit", str(spec), "--compute", "9bad name", "--dry-run", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("simgym: error: --compute:")
    assert "Traceback" not in r.stderr


def test_code_folder_must_hold_the_specs_files(tmp_path):
    spec = _project(tmp_path)
    sub = spec.parent / "specs"
    sub.mkdir()
    (sub / "train.yaml").write_text(spec.read_text().replace("env: spec.yaml", "env: ../spec.yaml"))
    with pytest.raises(aml.AmlError, match=r"outside the code folder"):
        aml.plan_submission(sub / "train.yaml", {})
    plan = aml.plan_submission(sub / "train.yaml", {"code": str(spec.parent)})
    assert plan.spec_rel == "specs/train.yaml"
    assert shlex.split(plan.job.command)[2] == "specs/train.yaml"


def test_missing_sdk_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)
    with pytest.raises(aml.AmlError, match=re.escape('pip install "simgym[aml]"')):
        aml.require_sdk()


# ----------------------------------------------------------------------------- no credentials


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"subscription_id": "00000000-0000-0000-0000-000000000000",
                                "resource_group": "rg", "workspace_name": "ws"}))  # fmt: skip
    return path


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root")
def test_without_credentials_or_network_one_clear_error(tmp_path):
    spec = _project(tmp_path)
    # A network namespace with no network at all: nothing can leave, nothing is uploaded.
    env_vars = [k for k in os.environ if k.startswith("AZURE_")]
    assert not env_vars, f"test needs a clean environment, found {env_vars}"
    before = set(Path("/tmp").glob("simgym-aml-*"))
    r = _run("submit", str(spec), "--workspace-config", str(_config(tmp_path)), *SUBMIT,
             netns=True)  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(
        "simgym: error: no usable Azure credentials: sign in with `az login`"
    )
    assert "AZURE_CLIENT_SECRET" in lines[0] and "ManagedIdentity" in lines[0]
    assert set(Path("/tmp").glob("simgym-aml-*")) <= before, "left a staged build context"


def test_missing_workspace_config_is_named(tmp_path):
    spec = _project(tmp_path)
    r = _run("submit", str(spec), "--workspace-config", str(tmp_path / "nope.json"), *SUBMIT)
    assert r.returncode == 2
    assert r.stderr.startswith(
        f"simgym: error: workspace config {tmp_path / 'nope.json'} not found"
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"subscription_id": "x"}')
    r = _run("submit", str(spec), "--workspace-config", str(bad), *SUBMIT)
    assert "missing resource_group, workspace_name" in r.stderr


# ----------------------------------------------------------------------------- submission


class FakeCredential:
    """Hands out a token without asking anyone (the SDK never gets to use it here)."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken("fake-token", int(time.time()) + 3600)

    get_token_info = get_token


class Intercepted:
    """The real MLClient's network calls, replaced by recorders."""

    def __init__(self, client, monkeypatch, *, compute_exists=False, env_version=None):
        self.calls: list[tuple[str, object]] = []

        def missing(*a, **k):
            raise ResourceNotFoundError("not found")

        class Poller:
            def __init__(self, value):
                self.value = value

            def result(self):
                return self.value

        def compute_get(name):
            if not compute_exists:
                missing()
            from azure.ai.ml.entities import AmlCompute

            return AmlCompute(name=name, size="STANDARD_D4S_V3")

        def env_get(name, label=None):
            if env_version is None:
                missing()
            from azure.ai.ml.entities import Environment

            return Environment(name=name, version=env_version, image="x")

        def env_create(env):
            self.calls.append(("environment", env))
            self.calls.append(("context_files", sorted(p.name for p in Path(env.build.path).iterdir())
                               if env.build else []))  # fmt: skip
            return env

        def job_create(job, **kwargs):
            self.calls.append(("job", job))
            self.calls.append(("job_kwargs", kwargs))
            job.name = "calm_river_x1"
            return job

        monkeypatch.setattr(client.compute, "get", compute_get)
        monkeypatch.setattr(
            client.compute, "begin_create_or_update",
            lambda c: (self.calls.append(("compute", c)), Poller(c))[1],
        )  # fmt: skip
        monkeypatch.setattr(client.environments, "get", env_get)
        monkeypatch.setattr(client.environments, "create_or_update", env_create)
        monkeypatch.setattr(client.jobs, "create_or_update", job_create)

    def kinds(self):
        return [k for k, _ in self.calls]

    def get(self, kind):
        return next(v for k, v in self.calls if k == kind)


def test_submission_creates_cluster_environment_and_job(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    plan = aml.plan_submission(spec, {"nodes": 2, "environment": "simgym-cstr",
                                      "experiment": "cstr-impala", "max_run_time": "2h"})  # fmt: skip
    client = aml.ml_client(_config(tmp_path), credential=FakeCredential())
    calls = Intercepted(client, monkeypatch)
    said: list[str] = []
    result = aml.submit(plan, client=client, echo=said.append)

    assert calls.kinds() == ["compute", "environment", "context_files", "job", "job_kwargs"]
    compute = calls.get("compute")
    assert compute.min_instances == 0 and compute.max_instances == 2
    env = calls.get("environment")
    assert env.name == "simgym-cstr" and env.version == "1"
    assert env.build.dockerfile_path == "Dockerfile"
    job = calls.get("job")
    assert job.environment == "azureml:simgym-cstr:1"
    assert job.resources.instance_count == 2 and job.limits.timeout == 7200
    assert job.distribution.type == "mpi" and Path(job.code) == spec.parent
    assert calls.get("job_kwargs") == {"experiment_name": "cstr-impala"}
    assert result.name == "calm_river_x1"
    assert result.studio_url.startswith("https://ml.azure.com/runs/calm_river_x1?wsid=")
    assert "/workspaces/ws" in result.studio_url
    # The build context was staged for the upload, and is cleaned up after it.
    assert calls.get("context_files") == [
        ".dockerignore", "Dockerfile", "constraints.txt", "install.sh", "requirements.txt",
        "simgym-src"]  # fmt: skip
    assert not Path(env.build.path).exists()
    assert any("creating compute cluster cpu-cluster" in s for s in said)

    # The CLI prints the job's name and Studio URL.
    from typer.testing import CliRunner

    from launcher.cli import app

    monkeypatch.setattr(aml, "ml_client", lambda *a, **k: client)
    r = CliRunner().invoke(app, ["submit", str(spec), *SUBMIT])
    assert r.exit_code == 0, r.output
    assert "job: calm_river_x1" in r.output and "studio: https://ml.azure.com/runs/" in r.output


def test_existing_environment_is_reused_unless_rebuilt(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    client = aml.ml_client(_config(tmp_path), credential=FakeCredential())
    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="3")
    aml.submit(aml.plan_submission(spec, {"environment": "simgym-cstr"}), client=client,
               echo=lambda s: None)  # fmt: skip
    assert calls.kinds() == ["job", "job_kwargs"]  # no cluster, no environment created
    assert calls.get("job").environment == "azureml:simgym-cstr:3"

    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="3")
    plan = aml.plan_submission(spec, {"environment": "simgym-cstr", "rebuild_environment": True})
    aml.submit(plan, client=client, echo=lambda s: None)
    assert calls.kinds() == ["environment", "context_files", "job", "job_kwargs"]
    assert calls.get("environment").version == "4"
    assert calls.get("job").environment == "azureml:simgym-cstr:4"


def test_status_and_logs(tmp_path, monkeypatch):
    client = aml.ml_client(_config(tmp_path), credential=FakeCredential())
    from azure.ai.ml.entities import CommandJob

    job = CommandJob(command="simgym node t.yaml", experiment_name="cstr-impala",
                     compute="cpu-cluster", environment="azureml:e:1")  # fmt: skip
    job.name = "calm_river_x1"
    monkeypatch.setattr(job, "_status", "Failed", raising=False)
    monkeypatch.setattr(client.jobs, "get", lambda name: job)
    lines = aml.job_status("calm_river_x1", None, client=client)
    assert "status: Failed" in lines and "see why: simgym logs calm_river_x1" in lines

    def download(name, download_path, all):
        root = Path(download_path) / "artifacts"
        (root / "user_logs").mkdir(parents=True)
        (root / "outputs").mkdir()
        (root / "outputs" / "error.txt").write_text("simgym node (rank 0 of 2) failed while x\n")
        for rank in (0, 1):
            (root / "user_logs" / f"std_log_process_0{rank}.txt").write_text(
                "\n".join(f"rank {rank} line {i}" for i in range(100))
            )

    monkeypatch.setattr(client.jobs, "download", download)
    out = aml.job_logs("calm_river_x1", None, to=tmp_path / "dl", lines=5, client=client)
    text = "\n".join(out)
    assert text.index("error.txt") < text.index("std_log_process_00")
    assert "rank 1 line 99" in text and "rank 1 line 94" not in text


# ----------------------------------------------------------------------------- Docker files

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL"}  # fmt: skip


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs; continuation lines joined, comments dropped."""
    steps, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += (" " if current else "") + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            word, _, args = current.partition(" ")
            steps.append((word, args.strip()))
            current = ""
    assert not current, f"{path}: dangling line continuation"
    return steps


@pytest.mark.parametrize("kind", ["sim", "train", "train-gpu"])
def test_dockerfiles_are_well_formed_and_pinned(kind, tmp_path):
    context = aml.stage_build_context(tmp_path / kind, kind)
    steps = parse_dockerfile(context / "Dockerfile")
    for word, args in steps:
        assert word in INSTRUCTIONS and word.isupper(), f"{word} {args}"
        assert args, f"{word} without arguments"
    assert steps[0][0] == "FROM"
    for word, args in steps:
        if word == "FROM":
            image = args.split()[0]
            name, _, tag = image.rpartition(":")
            assert "@sha256:" in image or (name and tag and tag != "latest"), image
            assert re.search(r"\d", tag), f"{image}: tag is not a version"
        if word in ("ENTRYPOINT", "CMD"):
            json.loads(args)  # exec form
        if word == "RUN" and "install.sh" in args:
            assert f"install.sh {kind} /opt/simgym" in args
        if word == "COPY":
            assert args.split()[0] == "."
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "install.sh" in runs
    if kind == "sim":
        assert ("ENTRYPOINT", '["simserver"]') in steps
        assert not any(w == "FROM" and "azureml" in a for w, a in steps)
    else:
        assert any(w == "FROM" and "mcr.microsoft.com/azureml/openmpi" in a for w, a in steps)
    # install.sh is valid sh, and every pinned package is pinned exactly.
    subprocess.run(["sh", "-n", str(context / "install.sh")], check=True)
    for line in (context / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+]*", line.strip()), line


def _install(kind: str, tmp_path: Path, requirements: str = "") -> tuple[Path, float]:
    req = tmp_path / "req.txt"
    req.write_text(requirements)
    context = aml.stage_build_context(tmp_path / "ctx", kind, req)
    started = time.monotonic()
    r = subprocess.run(
        ["sh", str(context / "install.sh"), kind, str(tmp_path / "venv")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp_path / "venv", time.monotonic() - started


def _base_python() -> str:
    """An interpreter outside our venv (a fresh venv must not inherit its packages)."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


@pytest.mark.timeout(600)
def test_sim_image_install_steps_succeed_in_a_fresh_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON", _base_python())
    venv, _ = _install("sim", tmp_path, requirements="six\n")
    py = str(venv / "bin" / "python")
    assert subprocess.run([py, "-c", "import simserver, gymclient, six"]).returncode == 0
    for heavy in ("ray", "torch", "mlflow"):
        assert subprocess.run([py, "-c", f"import {heavy}"], capture_output=True).returncode != 0
    r = subprocess.run([str(venv / "bin" / "simserver"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--token" in r.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~2-5 min: Ray, torch, MLflow into a fresh venv
def test_training_image_install_steps_succeed_in_a_fresh_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHON", _base_python())
    venv, _ = _install("train", tmp_path)
    py = str(venv / "bin" / "python")
    r = subprocess.run(
        [py, "-c", "import ray, torch, mlflow; print(ray.__version__, torch.__version__, mlflow.__version__)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.split()[0] == "2.60.0" and r.stdout.split()[2] == "3.15.0"
