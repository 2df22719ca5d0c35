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
import zipfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("azure.ai.ml", reason="needs the aml extra (installed by make)")

from azure.ai.ml import load_compute, load_environment, load_job
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError

from gymclient.errors import SpecError
from launcher.aml import workspace
from launcher.aml.errors import AmlError, require_sdk
from launcher.aml.image import (
    DOCKER_DIR,
    SOURCE_ITEMS,
    _build_wheel,
    folder_digest,
    stage_build_context,
    stage_simgym_wheel,
)
from launcher.aml.plan import SOURCE_TAG, plan_submission, stage_environment
from launcher.aml.workspace import job_logs, job_status, ml_client, submit, validate_job

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
    assert (context / "Dockerfile").read_text() == (DOCKER_DIR / "train.Dockerfile").read_text()
    assert (context / "install.sh").exists() and (context / "lock-train.txt").exists()
    (wheel,) = context.glob("simgym-*.whl")  # simgym itself, as a wheel built from this checkout
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert "launcher/node.py" in names and "launcher/docker/install.sh" in names
    assert not [n for n in names if "__pycache__" in n]
    # The environment is tagged with what it is built from (reuse checks it).
    assert env.tags[SOURCE_TAG] == "context:" + folder_digest(context)[:32]

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
    plan = plan_submission(spec, {"max_run_time": "1h", "image": "myacr.azurecr.io/sim:1"})
    args = shlex.split(plan.job.command)
    assert args[args.index("--max-time") + 1] == "3240s"  # 1 h less 10 %, for wrap-up
    assert any("past the job's limit" in n for n in plan.notes)
    assert plan.environment.image == "myacr.azurecr.io/sim:1" and plan.environment.build is None


def test_bad_settings_are_one_line_errors(tmp_path):
    spec = _project(tmp_path, aml_section={"nodez": 2})
    with pytest.raises(SpecError, match=r"aml\.nodez: unknown key"):
        plan_submission(spec, {})
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
    with pytest.raises(AmlError, match=r"outside the code folder"):
        plan_submission(sub / "train.yaml", {})
    plan = plan_submission(sub / "train.yaml", {"code": str(spec.parent)})
    assert plan.spec_rel == "specs/train.yaml"
    assert shlex.split(plan.job.command)[2] == "specs/train.yaml"


def test_missing_sdk_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)
    with pytest.raises(AmlError, match=re.escape('pip install "simgym[aml]"')):
        require_sdk()


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

    def __init__(self, client, monkeypatch, *, compute_exists=False, env_version=None,
                 env_tags=None, compute_max=2, compute_type=None):  # fmt: skip
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

            if compute_type is not None:
                from azure.ai.ml.entities import ComputeInstance

                return ComputeInstance(name=name, size="STANDARD_D4S_V3")
            return AmlCompute(name=name, size="STANDARD_D4S_V3", max_instances=compute_max)

        def env_get(name, label=None):
            if env_version is None:
                missing()
            from azure.ai.ml.entities import Environment

            return Environment(name=name, version=env_version, image="x", tags=env_tags)

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
    plan = plan_submission(spec, {"nodes": 2, "environment": "simgym-cstr",
                                      "experiment": "cstr-impala", "max_run_time": "2h"})  # fmt: skip
    client = ml_client(_config(tmp_path), credential=FakeCredential())
    calls = Intercepted(client, monkeypatch)
    said: list[str] = []
    result = submit(plan, client=client, echo=said.append)

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
        ".dockerignore", "Dockerfile", "constraints.txt", "install.sh", "lock-train.txt", "lock.py",
        "requirements.txt", "simgym-0.1.0-py3-none-any.whl"]  # fmt: skip
    assert not Path(env.build.path).exists()
    assert any("creating compute cluster cpu-cluster" in s for s in said)

    # The CLI prints the job's name and Studio URL.
    from typer.testing import CliRunner

    from launcher.cli import app

    monkeypatch.setattr(workspace, "ml_client", lambda *a, **k: client)
    r = CliRunner().invoke(app, ["submit", str(spec), *SUBMIT])
    assert r.exit_code == 0, r.output
    assert "job: calm_river_x1" in r.output and "studio: https://ml.azure.com/runs/" in r.output


def _source_tag(spec: Path, tmp_path: Path, **options) -> str:
    """The tag a plan's environment gets once its build context is staged."""
    plan = plan_submission(spec, options)
    stage_environment(plan, tmp_path / "ctx-for-tag")
    return plan.environment.tags[SOURCE_TAG]


def test_existing_environment_is_reused_when_it_matches(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    tag = _source_tag(spec, tmp_path)
    client = ml_client(_config(tmp_path), credential=FakeCredential())
    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="3",
                        env_tags={SOURCE_TAG: tag})  # fmt: skip
    submit(plan_submission(spec, {"environment": "simgym-cstr"}), client=client,
               echo=lambda s: None)  # fmt: skip
    assert calls.kinds() == ["job", "job_kwargs"]  # no cluster, no environment created
    assert calls.get("job").environment == "azureml:simgym-cstr:3"

    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="3",
                        env_tags={SOURCE_TAG: tag})  # fmt: skip
    plan = plan_submission(spec, {"environment": "simgym-cstr", "rebuild_environment": True})
    submit(plan, client=client, echo=lambda s: None)
    assert calls.kinds() == ["environment", "context_files", "job", "job_kwargs"]
    assert calls.get("environment").version == "4"
    assert calls.get("job").environment == "azureml:simgym-cstr:4"


def test_an_environment_made_from_something_else_is_not_reused(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    client = ml_client(_config(tmp_path), credential=FakeCredential())
    # The latest version was built from another image: --image asks for this one.
    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="3",
                        env_tags={SOURCE_TAG: "image:myacr.azurecr.io/sim:1"})  # fmt: skip
    said: list[str] = []
    plan = plan_submission(spec, {"environment": "simgym-cstr",
                                      "image": "myacr.azurecr.io/sim:2"})  # fmt: skip
    submit(plan, client=client, echo=said.append)
    env = calls.get("environment")
    assert env.version == "4" and env.image == "myacr.azurecr.io/sim:2"
    assert env.tags[SOURCE_TAG] == "image:myacr.azurecr.io/sim:2"
    assert calls.get("job").environment == "azureml:simgym-cstr:4"
    assert any("was made from image:myacr.azurecr.io/sim:1" in s for s in said), said

    # The same image again: reused.
    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="4",
                        env_tags={SOURCE_TAG: "image:myacr.azurecr.io/sim:2"})  # fmt: skip
    plan = plan_submission(spec, {"environment": "simgym-cstr",
                                      "image": "myacr.azurecr.io/sim:2"})  # fmt: skip
    submit(plan, client=client, echo=lambda s: None)
    assert calls.kinds() == ["job", "job_kwargs"]

    # A changed build context (the sim's requirements): a new version, not the old image.
    old_tag = _source_tag(spec, tmp_path)
    (spec.parent / "requirements.txt").write_text("scipy>=1.12\n")
    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="5",
                        env_tags={SOURCE_TAG: old_tag})  # fmt: skip
    plan = plan_submission(spec, {"environment": "simgym-cstr",
                                      "requirements": "requirements.txt"})  # fmt: skip
    submit(plan, client=client, echo=lambda s: None)
    env = calls.get("environment")
    assert env.version == "6" and env.tags[SOURCE_TAG] != old_tag
    # An environment simgym never tagged (made by hand) is not trusted either.
    calls = Intercepted(client, monkeypatch, compute_exists=True, env_version="1", env_tags={})
    submit(plan_submission(spec, {"environment": "simgym-cstr"}), client=client,
               echo=lambda s: None)  # fmt: skip
    assert calls.get("environment").version == "2"


def test_an_existing_cluster_too_small_for_the_job_is_an_error(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    client = ml_client(_config(tmp_path), credential=FakeCredential())
    calls = Intercepted(client, monkeypatch, compute_exists=True, compute_max=2)
    plan = plan_submission(spec, {"nodes": 4, "image": "myacr.azurecr.io/sim:1"})
    with pytest.raises(AmlError, match=r"compute cpu-cluster scales to at most 2 node\(s\), "
                       r"the job asks for 4: .*--nodes 2"):  # fmt: skip
        submit(plan, client=client, echo=lambda s: None)
    assert calls.kinds() == []  # nothing registered, nothing submitted
    # Big enough: used as it is.
    calls = Intercepted(client, monkeypatch, compute_exists=True, compute_max=4)
    submit(plan, client=client, echo=lambda s: None)
    assert "compute" not in calls.kinds() and "job" in calls.kinds()
    # A compute instance is not a cluster: an MPI job over nodes cannot run on it.
    calls = Intercepted(client, monkeypatch, compute_exists=True, compute_type="computeinstance")
    with pytest.raises(AmlError, match=r"is a computeinstance, not a compute cluster"):
        submit(plan, client=client, echo=lambda s: None)


def test_a_job_that_does_not_validate_is_refused_before_anything_is_created(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    client = ml_client(_config(tmp_path), credential=FakeCredential())
    plan = plan_submission(spec, {"image": "myacr.azurecr.io/sim:1"})
    validate_job(client, plan.job)  # the planned job passes
    calls = Intercepted(client, monkeypatch)
    plan.job.code = str(tmp_path / "gone")  # e.g. the project folder moved since planning
    with pytest.raises(AmlError, match=r"the job does not validate: code: Can't find directory"):
        submit(plan, client=client, echo=lambda s: None)
    assert calls.kinds() == []
    plan = plan_submission(spec, {"image": "myacr.azurecr.io/sim:1"})
    plan.job.command = None
    with pytest.raises(AmlError, match=r"the job does not validate: command is required"):
        submit(plan, client=client, echo=lambda s: None)


def test_any_sdk_error_in_validation_is_one_aml_error(tmp_path):
    # marshmallow's ValidationError (not the SDK's ValidationException) from the job's
    # command node: still the job not validating, in one line.
    spec = _project(tmp_path)
    client = ml_client(_config(tmp_path), credential=FakeCredential())
    plan = plan_submission(spec, {"image": "myacr.azurecr.io/sim:1"})
    plan.job.distribution = "bogus"
    with pytest.raises(AmlError, match=r"^the job does not validate: ") as info:
        validate_job(client, plan.job)
    assert "\n" not in str(info.value) and "bogus" in str(info.value)


def _wheel_dirs(root: Path) -> list[Path]:
    return list(root.glob("simgym-wheel-*"))


def test_a_failed_wheel_build_leaves_no_temp_folder(tmp_path, monkeypatch):
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # Not a checkout: the copy fails.
    with pytest.raises(AmlError, match="copying simgym's sources from"):
        _build_wheel(tmp_path / "empty")
    assert _wheel_dirs(temp) == []
    # A checkout whose pyproject.toml pip cannot read: the build fails.
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in SOURCE_ITEMS:
        item = REPO / name
        if item.is_dir():
            shutil.copytree(item, broken / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(item, broken / name)
    (broken / "pyproject.toml").write_text("[project\nname = ")
    with pytest.raises(AmlError, match=r"building simgym's wheel from .* failed") as info:
        _build_wheel(broken)
    assert "\n" not in str(info.value)
    assert _wheel_dirs(temp) == []
    # A pip that does not finish in time is stopped, with a message that says so.
    with pytest.raises(AmlError, match=r"did not finish within 0 s"):
        _build_wheel(broken, timeout=0.01)
    assert _wheel_dirs(temp) == []


def test_status_and_logs(tmp_path, monkeypatch):
    client = ml_client(_config(tmp_path), credential=FakeCredential())
    from azure.ai.ml.entities import CommandJob

    job = CommandJob(command="simgym node t.yaml", experiment_name="cstr-impala",
                     compute="cpu-cluster", environment="azureml:e:1")  # fmt: skip
    job.name = "calm_river_x1"
    monkeypatch.setattr(job, "_status", "Failed", raising=False)
    monkeypatch.setattr(client.jobs, "get", lambda name: job)
    lines = job_status("calm_river_x1", None, client=client)
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
    out = job_logs("calm_river_x1", None, to=tmp_path / "dl", lines=5, client=client)
    text = "\n".join(out)
    assert text.index("error.txt") < text.index("std_log_process_00")
    assert "rank 1 line 99" in text and "rank 1 line 94" not in text


# ----------------------------------------------------------------------------- a plain install


@pytest.mark.timeout(600)
def test_submit_works_from_a_plain_install_with_no_source_checkout(tmp_path):
    """`pip install simgym` from a wheel, then `simgym submit --dry-run` in a project folder."""
    # The wheel a user installs, built from a copy of the sources (nothing written here).
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCE_ITEMS:
        item = REPO / name
        if item.is_dir():
            shutil.copytree(
                item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(item, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)  # fmt: skip
    (built,) = (tmp_path / "dist").glob("simgym-*.whl")
    shutil.rmtree(src)

    # A fresh venv with simgym installed from the wheel, not editable. Its dependencies come
    # from our venv's site-packages, appended after its own (a .pth line adds the folder
    # without running that folder's .pth files, so our editable simgym stays out of sight).
    venv = tmp_path / "venv"
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(built)],
                   check=True, capture_output=True)  # fmt: skip
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    ours = Path(subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    (site / "zz_simgym_test_deps.pth").write_text(f"{ours}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [py, "-c", "import launcher; from launcher.aml.image import source_checkout as s; print(launcher.__file__); print(s())"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env,
    ).stdout.split("\n")  # fmt: skip
    assert where[0].startswith(str(site)) and where[1] == "None", where

    spec = _project(tmp_path)
    out = tmp_path / "out"
    r = subprocess.run([str(venv / "bin" / "simgym"), "submit", "train.yaml", *SUBMIT, "--dry-run", str(out)],
                       cwd=spec.parent, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    environment = load_environment(out / "environment.yml")
    context = Path(environment.build.path)
    assert context == out.resolve() / "environment-context"
    assert (context / "Dockerfile").read_text() == (DOCKER_DIR / "train.Dockerfile").read_text()
    for name in ("install.sh", "lock.py", "lock-train.txt", "constraints.txt", ".dockerignore"):
        assert (context / name).read_bytes() == (DOCKER_DIR / name).read_bytes(), name
    assert (context / "requirements.txt").read_text() == ""
    # simgym goes in as the installed simgym repacked: the same files as the wheel installed.
    (repacked,) = context.glob("simgym-*.whl")
    assert repacked.name == built.name
    with zipfile.ZipFile(built) as a, zipfile.ZipFile(repacked) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        for name in a.namelist():
            if not name.endswith("/RECORD"):
                assert a.read(name) == b.read(name), name
    # ... and it installs, RECORD and all.
    check = subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--force-reinstall",
                            "--target", str(tmp_path / "t"), str(repacked)], capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert (tmp_path / "t" / "launcher" / "docker" / "train.Dockerfile").is_file()


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
    context = stage_build_context(tmp_path / kind, kind)
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
        if word == "COPY":  # the context, or files of it (a dependencies layer's)
            assert args.split()[-1].startswith("/opt/simgym-build"), args
            assert all(not a.startswith(("/", "..")) for a in args.split()[:-1]), args
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "install.sh" in runs
    if kind == "sim":
        assert ("ENTRYPOINT", '["simserver"]') in steps
        assert not any(w == "FROM" and "azureml" in a for w, a in steps)
    else:
        assert any(w == "FROM" and "mcr.microsoft.com/azureml/openmpi" in a for w, a in steps)
    # install.sh is valid sh, and every pinned package is pinned exactly.
    subprocess.run(["sh", "-n", str(context / "install.sh")], check=True)
    for name in ("constraints.txt", f"lock-{kind}.txt"):
        for line in (context / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+]*", line.strip()), (
                    line
                )
    # The lock holds every top-level pin at the same version.
    lock = _lock_module()
    pins, top = (
        lock.read_lock(context / f"lock-{kind}.txt"),
        lock.read_lock(context / "constraints.txt"),
    )
    for name in pins.keys() & top.keys():
        assert pins[name].split("+")[0] == top[name], name
    assert {"grpcio", "numpy", "protobuf"} <= pins.keys()
    if kind != "sim":
        assert {"ray", "torch", "mlflow", "azureml-mlflow"} <= pins.keys()


def _lock_module():
    """docker/lock.py, imported from where the package ships it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("simgym_docker_lock", DOCKER_DIR / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _install(kind: str, tmp_path: Path, requirements: str = "") -> tuple[Path, float]:
    req = tmp_path / "req.txt"
    req.write_text(requirements)
    context = stage_build_context(tmp_path / "ctx", kind, req)
    started = time.monotonic()
    r = subprocess.run(
        ["sh", str(context / "install.sh"), kind, str(tmp_path / "venv")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"every installed distribution is pinned by lock-{kind}.txt" in r.stdout
    return tmp_path / "venv", time.monotonic() - started


def _freeze(python: str) -> dict[str, str]:
    lock = _lock_module()
    out = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    pins = {}
    for line in out.splitlines():
        if " @ " in line:  # installed from a file: simgym's wheel
            pins[lock.normalize(line.split(" @ ")[0])] = "direct"
            continue
        name, sep, version = line.partition("==")
        assert sep, f"not a pinned distribution: {line}"
        pins[lock.normalize(name)] = version
    return pins


def _assert_lock_covers(venv: Path, kind: str, tmp_path: Path, own: set[str] = frozenset()) -> None:
    """Everything the install put in the venv is pinned by the kind's lock, at that version."""
    lock = _lock_module()
    pins = lock.read_lock(DOCKER_DIR / f"lock-{kind}.txt")
    # What a fresh venv has before anything is installed (pip, and setuptools on 3.11).
    seed = tmp_path / "seed"
    subprocess.run([_base_python(), "-m", "venv", str(seed)], check=True)
    seeded = _freeze(str(seed / "bin" / "python"))
    unpinned = {
        name: version
        for name, version in _freeze(str(venv / "bin" / "python")).items()
        if name not in {"simgym", *own}
        and seeded.get(name) != version
        and pins.get(name) != version
    }
    assert not unpinned, f"installed outside lock-{kind}.txt: {unpinned}"


def _base_python() -> str:
    """An interpreter outside our venv (a fresh venv must not inherit its packages)."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


@pytest.mark.slow  # a fresh venv's installs, ~22 s: make test-slow
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
    _assert_lock_covers(venv, "sim", tmp_path, own={"six"})


# The train kind's install (Ray, torch, MLflow for real, ~2.5 min) is no longer run in a fresh
# venv here: tests/test_docker.py builds the training image itself, which runs this same
# install.sh (lock check, pip check, imports), and checks the image's versions and that
# `pip freeze` in it holds nothing outside lock-train.txt (make test-docker, part of
# make test-all). Without Docker, test_image_requirements_resolve_within_their_lock[train]
# (make test-slow) still resolves the same install through its lock.


def test_install_check_refuses_what_the_lock_does_not_pin(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==2.4.6\n")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"install": [
        {"metadata": {"name": "NumPy", "version": "2.4.6"}},
        {"metadata": {"name": "simgym", "version": "0.1.0"}},
        {"metadata": {"name": "six", "version": "1.17.0"}}]}))  # fmt: skip
    r = subprocess.run([sys.executable, str(DOCKER_DIR / "lock.py"), "check", str(lock),
                        str(report)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1 and "six==1.17.0 (not in the lock)" in r.stderr
    lock.write_text("numpy==2.4.6\nsix==1.16.0\n")
    r = subprocess.run([sys.executable, str(DOCKER_DIR / "lock.py"), "check", str(lock),
                        str(report)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1 and "six==1.17.0 (the lock pins 1.16.0)" in r.stderr


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("kind", "torch_version"),
    [
        # ~35 s: make test-slow runs it (the default suite must stay under 15 minutes).
        pytest.param("train", "2.13.0+cpu", marks=pytest.mark.slow),
        # ~70 s of pip resolving several GB of CUDA wheels' metadata: `make test-all` runs it
        # (the default suite must stay under 15 minutes on 2 cores).
        pytest.param("train-gpu", "2.13.0", marks=pytest.mark.slow),  # PyPI's: the CUDA build
    ],
)
def test_image_requirements_resolve_within_their_lock(tmp_path, kind, torch_version):
    """A training image's exact install, resolved by pip (not installed: that is slow)."""
    lock = _lock_module()
    wheel = stage_simgym_wheel(tmp_path / "wheel")
    pins = DOCKER_DIR / f"lock-{kind}.txt"
    report = lock.resolve(kind, wheel, _base_python(), tmp_path, pins)
    assert lock.outside(lock.read_lock(pins), report) == []
    got = lock.installed(report)
    assert got["torch"] == torch_version and got["ray"] == "2.60.0"
    assert got["mlflow"] == "3.15.0" and "azureml-mlflow" in got
    assert any(name.startswith("nvidia-") for name in got) == (kind == "train-gpu"), sorted(got)
