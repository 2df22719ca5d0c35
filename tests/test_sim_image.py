"""A sim that ships as its own image: ``sim.launch.command`` sidecars, ``--sim-image`` on Azure ML.

- ``sim.launch.command``: a server of the user's (here the Node.js kit's ``npm run sample --``,
  and simserver started as a plain command) run as supervised sidecars, with simserver's
  transport flags appended; a short ``simgym train`` against the JS sample started that way.
- ``simgym submit --sim-image`` / ``sim.image``: the dry run's environment (build context with
  ``docker/sim-train.Dockerfile``, the sim image and its command filled in) and job load back
  through azure-ai-ml's loaders; the command comes from the spec, or from ``docker image
  inspect``; every way it cannot be had is one clear error.
- With Docker (``@pytest.mark.docker``, slow): the combined image built FROM a CSTR sim image
  (docker/sim.Dockerfile + the sample's code and CMD), and the multi-node bootstrap run in two
  containers of it on one Docker network, the sims being the image's own command.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gymclient.errors import SimgymError, SpecError
from launcher.sidecars import SidecarPool, SidecarStartError
from launcher.simcommand import COMMAND_VAR, CWD_VAR, image_command
from launcher.trainspec import Launch, load_train_spec

from .conftest import REPO, SIMS
from .test_node_sim import CSTR_SPEC, KIT, npm  # noqa: F401  (npm: the kit's fixture)

CSTR = REPO / "examples" / "cstr"


def _healthy(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


# ----------------------------------------------------------------------------- sim.launch.command


def test_a_command_sidecar_is_supervised_and_restarted_on_its_address(tmp_path):
    # simserver itself, started as a command of the user's: the flags simgym appends are the
    # only way it learns where to listen, so serving at all proves they arrive.
    command = [sys.executable, "-m", "simserver", "toy.py:Toy"]
    launch = Launch(command=command, cwd=str(SIMS), servers=2, transport="tcp",
                    restart_backoff=0.1, health_every=0.5)  # fmt: skip
    pool = SidecarPool(launch, SIMS, tmp_path / "sims")
    try:
        addresses = pool.start(timeout=60)
        assert len(addresses) == 2 and all(a.startswith("127.0.0.1:") for a in addresses)
        assert all(_healthy(a) for a in addresses)
        log = (tmp_path / "sims" / "server-0.log").read_text()
        assert "--max-sessions" not in log  # the flags went to the server, not into its log
        first = pool.servers[0].pid
        pool.servers[0].kill()
        deadline = time.monotonic() + 60
        while not pool.events and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [e.kind for e in pool.events] == ["restarted"], pool.events
        assert "sim server 0 (" + " ".join(command) in pool.events[0].detail
        assert pool.servers[0].pid != first and pool.addresses == addresses  # same port
        assert _healthy(addresses[0])
    finally:
        pool.stop()
    assert not pool.servers[0].alive and not pool.servers[1].alive


def test_a_command_that_cannot_run_is_a_start_error_naming_it(tmp_path):
    launch = Launch(command=["no-such-sim-server", "--x"], cwd=str(tmp_path))
    with pytest.raises(SidecarStartError) as info:
        SidecarPool(launch, tmp_path, tmp_path / "sims").start(timeout=30)
    first = str(info.value).splitlines()[0]
    assert first.startswith("sim server 0 (no-such-sim-server --x) failed to start: ")
    assert "cannot run 'no-such-sim-server': No such file or directory" in first
    assert "exited with code 127" in first
    launch = Launch(command=["true"], cwd=str(tmp_path / "missing"))
    with pytest.raises(SidecarStartError, match=r"cannot run the sim command in .*missing"):
        SidecarPool(launch, tmp_path, tmp_path / "sims2").start(timeout=30)


def _spec(tmp_path: Path, sim: dict, env: str = "spec.yaml") -> Path:
    for name in ("spec.yaml", "reward.py", "sim.py"):
        shutil.copy2(CSTR / name, tmp_path / name)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"env": env, "sim": sim, "stop": {"iterations": 1}}))
    return path


@pytest.mark.parametrize(
    ("sim", "key", "words"),
    [
        ({"launch": {"command": ["srv"], "target": "sim.py:CSTR"}}, "sim.launch.target",
         "give target or command, not both"),
        ({"launch": {"command": ["srv"], "isolate": "process"}}, "sim.launch.isolate",
         "give isolate or command"),
        ({"launch": {"cwd": "sims"}}, "sim.launch.cwd", "give the command"),
        ({"launch": {"command": []}}, "sim.launch.command", "a list of words"),
        ({"launch": {"command": ["srv", " "]}}, "sim.launch.command", "a list of words"),
        ({"image": "my sim"}, "sim.image", "not an image reference"),
        ({"image": "cstr-sim:1", "address": "127.0.0.1:5"}, "sim.image",
         "give image or address, not both"),
    ],
)  # fmt: skip
def test_launch_command_and_image_errors_name_the_file_and_key(tmp_path, sim, key, words):
    path = _spec(tmp_path, sim)
    with pytest.raises(SpecError) as info:
        load_train_spec(path)
    assert str(info.value).startswith(f"{path}: {key}: "), str(info.value)
    assert words in str(info.value)


def test_the_command_runs_from_its_cwd_relative_to_the_spec(tmp_path, monkeypatch):
    monkeypatch.delenv(COMMAND_VAR, raising=False)
    path = _spec(tmp_path, {"launch": {"command": ["npm", "run", "sample", "--"],
                                       "cwd": "../node", "servers": 2}})  # fmt: skip
    spec = load_train_spec(path)
    launch = spec.launch(spec.load_env_spec())
    assert launch is not None and launch.command == ["npm", "run", "sample", "--"]
    assert launch.cwd == str((tmp_path / ".." / "node").resolve()) and launch.servers == 2
    assert launch.target is None  # the env spec's sim.target is not started


def test_an_image_spec_without_a_command_says_which_key_to_give(tmp_path, monkeypatch):
    monkeypatch.delenv(COMMAND_VAR, raising=False)
    path = _spec(tmp_path, {"image": "cstr-sim:1"})
    spec = load_train_spec(path)
    with pytest.raises(SpecError) as info:
        spec.launch(spec.load_env_spec())
    assert str(info.value).startswith(f"{path}: sim.launch.command: sim.image cstr-sim:1: ")
    # Inside a combined image, its command (baked in as SIMGYM_SIM_COMMAND) is the sims'.
    monkeypatch.setenv(COMMAND_VAR, '["simserver","sim.py:CSTR"]')
    monkeypatch.setenv(CWD_VAR, "/sim")
    launch = spec.launch(spec.load_env_spec())
    assert launch is not None and launch.command == ["simserver", "sim.py:CSTR"]
    assert launch.cwd == "/sim"
    # ... also for a spec that names no image (--sim-image on the command line) ...
    plain = load_train_spec(_spec(tmp_path, {"launch": {"servers": 3}}))
    launch = plain.launch(plain.load_env_spec())
    assert launch is not None and launch.command == ["simserver", "sim.py:CSTR"]
    assert launch.servers == 3
    # ... but a spec's own target or command wins.
    own = load_train_spec(_spec(tmp_path, {"launch": {"command": ["own"]}}))
    launch = own.launch(own.load_env_spec())
    assert launch is not None and launch.command == ["own"]


@pytest.mark.parametrize("value", ["simserver sim.py:CSTR", "[]", '["a", 3]', "{}", '[""]'])
def test_a_malformed_image_command_variable_is_named(value):
    with pytest.raises(SimgymError, match=f"^{COMMAND_VAR}=.*JSON list of strings"):
        image_command({COMMAND_VAR: value})
    assert image_command({}) is None
    assert image_command({COMMAND_VAR: '["s"]'}) == (["s"], "/")


@pytest.mark.slow  # 63 s measured on the shared 2-core machine (npm start + Ray + 1 PPO step)
def test_simgym_train_against_the_js_sample_it_starts_itself(npm, tmp_path):  # noqa: F811
    # The gap "simgym train cannot start a JS sim server", closed: sim.launch.command starts
    # the kit's sample with simserver's flags (a unix socket, so with its packed socket), as
    # a supervised sidecar. One PPO iteration in this process, as test_node_sim's training.
    pytest.importorskip("ray.rllib", reason="training needs the train extra (installed by make)")
    from launcher.train import train

    from .conftest import private_ray

    spec = {
        "env": str(CSTR_SPEC),  # its sim.target (the Python sample) is not started
        "sim": {"launch": {"command": [npm, "run", "--silent", "sample", "--"],
                           "cwd": str(KIT), "sessions_per_server": 2}},
        "algorithm": "PPO",
        "config": {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 1},
        "resources": {"env_runners": 0, "envs_per_runner": 2, "cpus": 2},
        "stop": {"iterations": 1, "max_time": 240},
        "checkpoint": {"every": 1, "keep": 1},
        "output": str(tmp_path / "runs"),
        "experiment": "js-sidecar",
    }  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(spec))
    with private_ray(num_cpus=2):
        run_dir, state = train(path)
    assert state.finished and state.iteration == 1 and state.env_steps >= 200, state
    assert state.episodes >= 2, state
    log = (run_dir / "sims" / "server-0.log").read_text()
    # The JS server's own log lines: it served the CSTR sample on the socket simgym gave it,
    # and stopped gracefully when the training ended (SIGTERM reached node through npm).
    assert "simgym-node: serving CSTR on unix:" in log, log
    assert "signal 15: shutting down" in log and "stopped (" in log, log
    assert not (run_dir / "error.txt").exists()


# ----------------------------------------------------------------------------- --sim-image


SIM_IMAGE = "simgymacr.azurecr.io/cstr-sim:1.0"


def _image_project(tmp_path: Path, sim: dict) -> Path:
    """A project whose sim is in its image: the env spec names no target, no sim.py here."""
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy2(CSTR / "reward.py", project / "reward.py")
    env = yaml.safe_load((CSTR / "spec.yaml").read_text())
    del env["sim"]["target"]
    (project / "spec.yaml").write_text(yaml.safe_dump(env))
    train = yaml.safe_load((CSTR / "train.yaml").read_text())
    train.update(sim=sim, stop={"max_time": "10m"}, resources={"env_runners": 2})
    (project / "train.yaml").write_text(yaml.safe_dump(train))
    return project / "train.yaml"


def _dockerfile_args(path: Path) -> dict[str, str]:
    """``ARG NAME='value'`` lines of a staged Dockerfile, by name (quotes removed)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("ARG ") and "=" in line:
            name, value = line[4:].split("=", 1)
            out[name] = value[1:-1] if value[:1] == "'" == value[-1:] else value
    return out


def test_dry_run_with_a_sim_image_round_trips_through_the_sdk_loaders(tmp_path, monkeypatch):
    # In this process (the wheel simgym stages is built once per process and content).
    pytest.importorskip("azure.ai.ml", reason="needs the aml extra (installed by make)")
    from azure.ai.ml import load_environment, load_job

    from launcher.aml.image import DOCKER_DIR, folder_digest
    from launcher.aml.plan import SOURCE_TAG, plan_submission, write_dry_run

    from .test_aml import INSTRUCTIONS, parse_dockerfile

    monkeypatch.delenv(COMMAND_VAR, raising=False)
    launch = {"command": ["simserver", "sim.py:CSTR"], "cwd": "/sim", "servers": 2,
              "sessions_per_server": 4}  # fmt: skip
    spec = _image_project(tmp_path, {"image": SIM_IMAGE, "launch": launch})
    out = tmp_path / "out"
    options = {"nodes": 2, "environment": "cstr-sim-train", "experiment": "cstr-image"}
    plan = plan_submission(spec, options)
    write_dry_run(plan, out)
    assert (
        f"the environment is built FROM the sim image {SIM_IMAGE}; every node runs 2 "
        "sidecar(s) of `simserver sim.py:CSTR` in /sim (the training spec's sim.launch.command)"
    ) in plan.notes

    env = load_environment(out / "environment.yml")
    assert env.name == "cstr-sim-train" and env.image is None
    assert env.tags["kind"] == "sim-train" and env.tags["sim_image"] == SIM_IMAGE
    context = Path(env.build.path)
    assert env.build.dockerfile_path == "Dockerfile"
    assert env.tags[SOURCE_TAG] == "context:" + folder_digest(context)[:32]
    steps = parse_dockerfile(context / "Dockerfile")
    for word, arg in steps:  # well formed, as test_aml checks simgym's other Dockerfiles
        assert word in INSTRUCTIONS and arg, (word, arg)
        if word in ("ENTRYPOINT", "CMD"):
            json.loads(arg)  # exec form
    # FROM the sim's image, named in the ARG's default: Azure ML passes no build arguments.
    assert steps[0] == ("ARG", f"SIM_IMAGE='{SIM_IMAGE}'")
    assert steps[1] == ("FROM", "${SIM_IMAGE}")
    args = _dockerfile_args(context / "Dockerfile")
    assert args["SIM_COMMAND"] == "" and args["SIM_CWD"] == ""  # the spec's command is used
    assert ("ENTRYPOINT", "[]") in steps and ("USER", "root") in steps
    deps, full = [a for w, a in steps if w == "RUN" and "sim-train.sh install" in a]
    # The locked dependencies in a layer of their own (cached while only simgym changes).
    assert deps.startswith(
        "sh /opt/simgym-build/sim-train.sh install /opt/simgym-train --deps-only"
    )
    assert (
        full
        == "sh /opt/simgym-build/sim-train.sh install /opt/simgym-train && rm -rf /opt/simgym-build"
    )
    for name in ("sim-train.sh", "install.sh", "lock.py", "lock-train.txt", "requirements.txt"):
        assert (context / name).is_file(), name
    assert (context / "lock-train.txt").read_bytes() == (DOCKER_DIR / "lock-train.txt").read_bytes()
    assert len(list(context.glob("simgym-*.whl"))) == 1
    subprocess.run(["sh", "-n", str(context / "sim-train.sh")], check=True)

    job = load_job(out / "job.yml")
    assert job.environment == "cstr-sim-train@latest" and job.resources.instance_count == 2
    assert job.distribution.type == "mpi" and job.distribution.process_count_per_instance == 1
    words = shlex.split(job.command)
    # The training venv's simgym, by path: the sim image has a `simgym` of its own on PATH.
    assert words[:3] == ["/opt/simgym-train/bin/simgym", "node", "train.yaml"]
    assert job.tags["sim_image"] == SIM_IMAGE


def test_the_image_command_survives_the_dockerfile_quoting():
    from launcher.aml.image import DOCKER_DIR, set_arg_defaults
    from launcher.aml.simimage import SimImage

    words = ["simserver", "sim.py:CSTR", "--kwarg", "name=it's $HOME", "a\\b", "ü"]
    image = SimImage("cstr-sim:1", words, "/sim", "test")
    template = (DOCKER_DIR / "sim-train.Dockerfile").read_text()
    staged = set_arg_defaults(template, image.build_args())
    args = {}
    for line in staged.splitlines():
        if line.startswith("ARG SIM_"):
            name, value = line[4:].split("=", 1)
            assert value[0] == value[-1] == "'", line
            args[name] = value[1:-1]
    assert "'" not in args["SIM_COMMAND"] and "$" not in args["SIM_COMMAND"]
    assert json.loads(args["SIM_COMMAND"]) == words  # what the image's ENV will hold
    assert args["SIM_CWD"] == "/sim" and args["SIM_IMAGE"] == "cstr-sim:1"
    # The command as the node reads it back from the image's environment.
    assert image_command({COMMAND_VAR: args["SIM_COMMAND"], CWD_VAR: "/sim"}) == (words, "/sim")


def test_submit_sim_image_without_docker_or_command_is_one_line(tmp_path):
    # The CLI's --sim-image reaches the plan; this stops before anything is staged.
    simgym = str(Path(sys.executable).parent / "simgym")
    spec = _image_project(tmp_path, {"launch": {"servers": 1}})
    env = {**os.environ, "PATH": str(tmp_path)}  # no docker CLI at hand
    env.pop(COMMAND_VAR, None)
    r = subprocess.run([simgym, "submit", str(spec), "--sim-image", "cstr-sim:1", "--dry-run",
                        str(tmp_path / "out")], capture_output=True, text=True, env=env,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"simgym: error: {spec}: sim.launch.command: the sim image cstr-sim:1's command cannot "
        "be read (no docker command on PATH): give it here, or run simgym submit where Docker "
        "has the image"
    )
    assert not (tmp_path / "out").exists()


def test_sim_image_settings_that_cannot_go_together_are_one_line_errors(tmp_path, monkeypatch):
    pytest.importorskip("azure.ai.ml", reason="needs the aml extra (installed by make)")
    from launcher.aml.errors import AmlError
    from launcher.aml.plan import plan_submission

    monkeypatch.delenv(COMMAND_VAR, raising=False)
    command = {"launch": {"command": ["simserver", "sim.py:CSTR"], "cwd": "/sim"}}
    spec = _image_project(tmp_path / "a", command)
    plan = plan_submission(spec, {"sim_image": "cstr-sim:2"})  # --sim-image, spec has none
    assert plan.image_kind == "sim-train" and plan.sim_image is not None
    assert plan.sim_image.name == "cstr-sim:2" and plan.sim_image.command is None
    for options, words in [
        ({"sim_image": "cstr sim"}, "--sim-image 'cstr sim': not an image reference"),
        ({"sim_image": "cstr-sim:2", "image": "mine:1"}, "FROM the sim's image, or is an image"),
        ({"sim_image": "cstr-sim:2", "gpu": True}, "the sim-train image is CPU only"),
    ]:
        with pytest.raises(AmlError, match=words):
            plan_submission(spec, options)
    addressed = _image_project(tmp_path / "b", {"address": "10.0.0.4:50051"})
    with pytest.raises(AmlError, match=r"the training spec's sims are sim\.address"):
        plan_submission(addressed, {"sim_image": "cstr-sim:2"})
    targeted = _image_project(tmp_path / "c", {"launch": {"target": "x.py:X"}})
    with pytest.raises(SpecError, match=r"train.yaml: sim.launch.target: the sims come from"):
        plan_submission(targeted, {"sim_image": "cstr-sim:2"})


def test_without_docker_the_sim_command_must_be_in_the_spec(tmp_path, monkeypatch):
    pytest.importorskip("azure.ai.ml", reason="needs the aml extra (installed by make)")
    from launcher.aml.plan import plan_submission

    monkeypatch.setenv("PATH", str(tmp_path))  # no docker CLI at hand
    spec = _image_project(tmp_path, {"image": SIM_IMAGE})
    with pytest.raises(SpecError) as info:
        plan_submission(spec, {})
    assert str(info.value) == (
        f"{spec}: sim.launch.command: the sim image {SIM_IMAGE}'s command cannot be read (no "
        "docker command on PATH): give it here, or run simgym submit where Docker has the image"
    )


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"Entrypoint": None, "Cmd": None}, "has no ENTRYPOINT or CMD"),
        ({"Entrypoint": ["/bin/sh", "-c", "simserver sim.py:X"]}, "runs a shell"),
        ({"Entrypoint": ["simserver"], "Cmd": ["--help"]}, "only prints help"),
    ],
)
def test_an_image_command_that_cannot_take_the_flags_is_refused(config, words):
    from launcher.aml.errors import AmlError
    from launcher.aml.simimage import image_command as from_config

    with pytest.raises(AmlError, match=f"^sim image cstr-sim:1 .*{words}|^sim image cstr-sim:1's"):
        from_config("cstr-sim:1", config)
    good = {"Entrypoint": ["simserver"], "Cmd": ["sim.py:CSTR"], "WorkingDir": "/sim"}
    assert from_config("cstr-sim:1", good) == (["simserver", "sim.py:CSTR"], "/sim")
    assert from_config("x", {"Cmd": ["node", "sim.js"]}) == (["node", "sim.js"], "/")


# ----------------------------------------------------------------------------- with Docker


def _docker_kit():
    from . import dockerkit

    dockerkit.require_docker()
    return dockerkit


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_submit_reads_the_sim_command_with_docker_image_inspect(tmp_path, monkeypatch):
    # Images FROM scratch: metadata only, built in a second, no base needed.
    pytest.importorskip("azure.ai.ml", reason="needs the aml extra (installed by make)")
    from launcher.aml.errors import AmlError
    from launcher.aml.plan import plan_submission

    kit = _docker_kit()
    monkeypatch.delenv(COMMAND_VAR, raising=False)
    tags = {"good": "simgym-test/inspect-good:1", "help": "simgym-test/inspect-help:1"}
    bodies = {"good": 'WORKDIR /sim\nENTRYPOINT ["simserver"]\nCMD ["sim.py:CSTR"]\n',
              "help": 'ENTRYPOINT ["simserver"]\nCMD ["--help"]\n'}  # fmt: skip
    try:
        for key, tag in tags.items():
            ctx = tmp_path / key
            ctx.mkdir()
            (ctx / "Dockerfile").write_text("FROM scratch\n" + bodies[key])
            kit.docker("build", "-q", "-t", tag, str(ctx))
        spec = _image_project(tmp_path, {"launch": {"servers": 2}})
        plan = plan_submission(spec, {"sim_image": tags["good"]})
        assert plan.sim_image is not None
        assert (plan.sim_image.command, plan.sim_image.cwd) == (
            ["simserver", "sim.py:CSTR"],
            "/sim",
        )
        args = plan.sim_image.build_args()
        assert json.loads(args["SIM_COMMAND"]) == ["simserver", "sim.py:CSTR"]
        assert args["SIM_CWD"] == "/sim" and args["SIM_IMAGE"] == tags["good"]
        assert (
            f"2 sidecar(s) of `simserver sim.py:CSTR` in /sim ({tags['good']}'s " in plan.notes[-1]
        )
        with pytest.raises(AmlError, match="only prints help"):
            plan_submission(spec, {"sim_image": tags["help"]})
        with pytest.raises(AmlError, match=r"not in this machine's Docker \(docker pull "):
            plan_submission(spec, {"sim_image": "simgym-test/no-such-image:0"})
    finally:
        kit.docker("rmi", "-f", *tags.values(), check=False)


def _node_project(tmp_path: Path) -> Path:
    """The job's code folder: training spec, env spec (no target) and reward; no sim.py."""
    spec = _image_project(tmp_path, {"image": "simgym-test/cstr-sim:latest",
                                     "launch": {"servers": 1, "sessions_per_server": 4}})  # fmt: skip
    train = yaml.safe_load(spec.read_text())
    train["config"].update({"train_batch_size_per_learner": 200, "minibatch_size": 100,
                            "num_epochs": 1, "rollout_fragment_length": 25,
                            "min_time_s_per_iteration": 1})  # fmt: skip
    train.update(resources={"env_runners": 2, "envs_per_runner": 4}, stop={"iterations": 1},
                 checkpoint={"every": 5, "keep": 1}, experiment="cstr-image")  # fmt: skip
    spec.write_text(yaml.safe_dump(train))
    assert not (spec.parent / "sim.py").exists()
    return spec


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)  # the image builds (minutes, once per simgym change) + ~2 min run
def test_the_combined_image_runs_the_multi_node_bootstrap_with_the_images_sims(tmp_path):
    kit = _docker_kit()
    # 1. A sim that ships as its own image: simgym's sim image (docker/sim.Dockerfile) with the
    #    CSTR sample's code and a CMD that names it, as a sim author would build it.
    #    (dockerkit.cstr_sim_image; test_docker.py's fixture builds it beside the training image.)
    # 2. The combined image, staged as simgym submit --sim-image stages it (the command read
    #    with docker image inspect) and built with the host's pip sources.
    built = kit.cstr_sim_train_image()
    print(f"sim-train image: {built.seconds:.0f} s to build, {built.size_mb:.0f} MB")
    config = json.loads(kit.docker("image", "inspect", "--format", "{{json .Config}}",
                                   built.tag).stdout)  # fmt: skip
    env = dict(e.split("=", 1) for e in config["Env"])
    assert json.loads(env[COMMAND_VAR]) == ["simserver", "sim.py:CSTR"]
    assert env[CWD_VAR] == "/sim" and not config.get("Entrypoint") and not config.get("Cmd")
    probe = kit.docker("run", "--rm", built.tag, "sh", "-c",
        "command -v simserver; command -v mpirun; "
        "/opt/simgym/bin/python -c 'import ray' 2>/dev/null && echo sim-has-ray; "
        "/opt/simgym-train/bin/python -c 'import ray.rllib, torch; print(\"train-ok\")'",
    ).stdout.split()  # fmt: skip
    # The sim's command finds the sim image's simserver (its venv has no Ray); simgym's
    # training venv has Ray and torch; Open MPI was added (the sim image has none).
    assert probe == ["/opt/simgym/bin/simserver", "/usr/bin/mpirun", "train-ok"], probe
    # The Open MPI it added launches ranks (Azure ML runs the job's command with it).
    ranks = kit.docker("run", "--rm", built.tag, "mpirun", "--allow-run-as-root",
        "--oversubscribe", "-np", "2", "sh", "-c", "echo rank-$OMPI_COMM_WORLD_RANK",
    ).stdout.split()  # fmt: skip
    assert sorted(ranks) == ["rank-0", "rank-1"], ranks

    # 3. Two containers on one Docker network, each one node of the job, set up as Azure ML's
    #    MPI launcher sets up its processes (rank, size, head address, the job's Ray token).
    spec = _node_project(tmp_path)
    outs = [tmp_path / f"out-{rank}" for rank in (0, 1)]
    with kit.network() as net:
        head_name = f"{net}-r0"
        common = {"OMPI_COMM_WORLD_SIZE": "2", "AZ_BATCH_MASTER_NODE": f"{head_name}:6105",
                  "SIMGYM_RAY_TOKEN": "ab" * 32, "PYTHONUNBUFFERED": "1"}  # fmt: skip
        command = ["/opt/simgym-train/bin/simgym", "node", "train.yaml", "--output", "/out",
                   "--cpus", "1", "--join-timeout", "300s"]  # fmt: skip
        options = ["-w", "/code", "--shm-size", "512m"]

        def node(rank: int):
            return kit.run(
                built.tag, *command, network=net, name=f"{net}-r{rank}",
                env={**common, "OMPI_COMM_WORLD_RANK": str(rank)},
                volumes={str(spec.parent): "/code", str(outs[rank]): "/out"}, options=options,
            )  # fmt: skip

        started = time.monotonic()
        with node(0) as head, node(1) as worker:
            codes = [head.wait(900), worker.wait(300)]
            logs = [head.logs(), worker.logs()]
        print(f"two-node bootstrap in the combined image: {time.monotonic() - started:.0f} s")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "[simgym node 0/2] all 2 node(s) joined; training" in logs[0], logs[0][-3000:]
    assert "[simgym node 1/2] the head is gone (training exit code 0)" in logs[1], logs[1][-3000:]
    (run_dir,) = (outs[0] / "runs").iterdir()
    state = json.loads((run_dir / "run.json").read_text())
    assert state["finished"] and state["iteration"] == 1 and state["env_steps"] > 0
    # Each node ran the image's command as its sims (the job's code has no sim.py and its env
    # spec no target: /sim/sim.py in the image is the only CSTR there is) and they were stepped.
    for rank, out in enumerate(outs):
        server_logs = list(out.rglob("server-*.log"))
        assert len(server_logs) == 1, (rank, server_logs)
        text = server_logs[0].read_text()
        assert "serving CSTR on unix:" in text and "for SimVectorEnv[" in text, (rank, text)
    cluster = json.loads((outs[0] / "nodes" / "cluster.json").read_text())
    assert len({n["ip"] for n in cluster}) == 2  # two containers, two addresses
