"""``simgym submit | node | status | logs``: Azure ML submission and the multi-node bootstrap.

Registered into the ``simgym`` command by ``launcher.cli``. Parses arguments and calls
``launcher.aml`` (plan, image, workspace) and ``launcher.node``; nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gymclient.errors import SimgymError


def _duration(option: str, value: str | None) -> float | None:
    from launcher.trainspec import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise SimgymError(f"{option}: {exc}") from None


def submit(
    spec: Annotated[Path, typer.Argument(help="Training spec YAML (see docs/training.md).")],
    workspace_config: Annotated[
        Path | None,
        typer.Option(help="The workspace's config.json (subscription, resource group, name)."),
    ] = None,
    compute: Annotated[
        str | None, typer.Option(help="Compute cluster name (created if missing).")
    ] = None,
    vm_size: Annotated[
        str | None, typer.Option(help="VM size of a cluster to create, e.g. STANDARD_D4S_V3.")
    ] = None,
    nodes: Annotated[int | None, typer.Option(min=1, help="Nodes (instance count).")] = None,
    environment: Annotated[
        str | None, typer.Option(help="Environment name (built from docker/ unless --image).")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Use this existing Docker image instead of building one.")
    ] = None,
    sim_image: Annotated[
        str | None,
        typer.Option(
            help="The sim's own image: build the environment FROM it (+ simgym's training "
            "layer); every node runs its command as sidecars (as sim.image in the spec)."
        ),
    ] = None,
    rebuild_environment: Annotated[
        bool, typer.Option(help="Register a new environment version even if one exists.")
    ] = False,
    gpu: Annotated[bool | None, typer.Option(help="Build the GPU training image.")] = None,
    experiment: Annotated[str | None, typer.Option(help="Experiment name.")] = None,
    max_run_time: Annotated[
        str | None, typer.Option(help="Job time limit (e.g. 90m, 2h); training stops before it.")
    ] = None,
    code: Annotated[
        Path | None,
        typer.Option(help="Project folder uploaded as the job's code (default: the spec's)."),
    ] = None,
    dry_run: Annotated[
        Path | None,
        typer.Option(help="Write job.yml, environment.yml, compute.yml here; contact nothing."),
    ] = None,
) -> None:
    """Submit a training spec to Azure ML: cluster, environment, experiment, multi-node job."""
    from launcher.aml.plan import dry_run_hint, plan_submission, write_dry_run
    from launcher.aml.workspace import submit as submit_plan

    options = {
        "workspace_config": str(workspace_config) if workspace_config else None,
        "compute": compute,
        "vm_size": vm_size,
        "nodes": nodes,
        "environment": environment,
        "image": image,
        "sim_image": sim_image,
        "rebuild_environment": rebuild_environment or None,
        "gpu": gpu,
        "experiment": experiment,
        "max_run_time": max_run_time,
        "code": str(code) if code else None,
    }
    plan = plan_submission(spec, options)
    if dry_run is not None:
        for path in write_dry_run(plan, dry_run):
            typer.echo(f"wrote {path}")
        typer.echo(dry_run_hint(plan, dry_run))
        return
    result = submit_plan(plan, echo=typer.echo)
    typer.echo(f"job: {result.name}")
    typer.echo(f"studio: {result.studio_url}")
    typer.echo(f"follow it with: simgym status {result.name}   /   simgym logs {result.name}")


def node(
    spec: Annotated[Path, typer.Argument(help="Training spec YAML.")],
    output: Annotated[
        str | None, typer.Option(help="Outputs folder (Azure ML uploads ./outputs).")
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="Override the MLflow experiment.")] = None,
    max_time: Annotated[
        str | None, typer.Option(help="Override stop.max_time (e.g. 90s, 10m, 2h).")
    ] = None,
    ray_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the Ray head (GCS).")
    ] = 6379,
    join_timeout: Annotated[
        str, typer.Option(help="How long the head waits for every node to join.")
    ] = "10m",
    cpus: Annotated[int | None, typer.Option(min=1, help="CPUs this node gives Ray.")] = None,
) -> None:
    """Per-node bootstrap of a multi-node training (run on every node, e.g. by mpirun)."""
    from launcher.node import run_node

    seconds = _duration("--max-time", max_time)
    timeout = _duration("--join-timeout", join_timeout)
    assert timeout is not None
    code = run_node(
        spec,
        output=output,
        experiment=experiment,
        max_time=seconds,
        ray_port=ray_port,
        join_timeout=timeout,
        cpus=cpus,
    )
    raise typer.Exit(code)


def status(
    job: Annotated[str, typer.Argument(help="Job name (printed by simgym submit).")],
    workspace_config: Annotated[
        Path | None, typer.Option(help="The workspace's config.json.")
    ] = None,
) -> None:
    """A job's status, experiment, compute and Studio URL."""
    from launcher.aml.workspace import job_status

    for line in job_status(job, workspace_config):
        typer.echo(line)


def logs(
    job: Annotated[str, typer.Argument(help="Job name (printed by simgym submit).")],
    workspace_config: Annotated[
        Path | None, typer.Option(help="The workspace's config.json.")
    ] = None,
    to: Annotated[
        Path | None, typer.Option(help="Download folder (default: ./aml-logs/JOB).")
    ] = None,
    lines: Annotated[int, typer.Option(min=1, help="Lines shown from each node's log.")] = 40,
) -> None:
    """Download a job's logs and outputs; show error.txt and each node's last lines."""
    from launcher.aml.workspace import job_logs

    for line in job_logs(job, workspace_config, to, lines):
        typer.echo(line)


def docker_context(
    kind: Annotated[str, typer.Argument(help="sim, train, train-gpu or sim-train.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the build context to.")],
    requirements: Annotated[
        Path | None, typer.Option(help="The sim's pip requirements file.")
    ] = None,
    sim_image: Annotated[
        str | None,
        typer.Option(
            help="sim-train: the sim's own image to build FROM (its command is read "
            "with docker image inspect when Docker has it)."
        ),
    ] = None,
) -> None:
    """Stage a Docker build context for one of simgym's images (docker build OUT)."""
    from launcher.aml.image import stage_build_context

    if requirements is not None and not requirements.is_file():
        raise SimgymError(f"--requirements {requirements}: no such file")
    if (kind == "sim-train") != (sim_image is not None):
        raise SimgymError("--sim-image goes with the sim-train kind, and sim-train needs it")
    args = None
    if sim_image is not None:
        from launcher.aml.simimage import SimImage, image_command, inspect_config

        config = inspect_config(sim_image)
        if isinstance(config, str):
            typer.echo(
                f"note: {config}: the image carries no sim command; the training spec must give "
                "sim.launch.command"
            )
            args = SimImage(sim_image, None, None, "").build_args()
        else:
            words, cwd = image_command(sim_image, config)
            args = SimImage(sim_image, words, cwd, "").build_args()
            typer.echo(f"the sims: {' '.join(words)} in {cwd} ({sim_image}'s ENTRYPOINT + CMD)")
    path = stage_build_context(out, kind, requirements, args)
    typer.echo(f"build context for the {kind} image: {path}  (docker build {path})")


def register(app: typer.Typer) -> None:
    """Add the Azure ML and multi-node commands to ``simgym``."""
    app.command()(submit)
    app.command()(node)
    app.command()(status)
    app.command()(logs)
    app.command("docker-context")(docker_context)
