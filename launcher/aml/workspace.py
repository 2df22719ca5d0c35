"""Talk to the Azure ML workspace: credentials, the client, cluster and environment, submit, logs.

``submit`` checks the workspace config and the credentials first (one clear error, before
anything is uploaded), then creates the cluster if missing, registers the environment unless a
matching one exists (or ``rebuild_environment``), and submits the job. Every SDK or network
error becomes one ``AmlError`` line saying what was being done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.aml.errors import AmlError, require_sdk
from launcher.aml.plan import SOURCE_TAG, Plan, stage_environment
from launcher.failure import message

Echo = Callable[[str], None]


@dataclass
class Submitted:
    """What ``submit`` returns."""

    name: str
    studio_url: str
    environment: str


def read_workspace_config(path: Path) -> dict[str, str]:
    """The workspace's ``config.json`` (as downloaded from the Azure portal).

    Raises:
        AmlError: Missing file or keys, named.
    """
    if not path.is_file():
        raise AmlError(
            f"workspace config {path} not found: download config.json from the workspace's "
            "page in the Azure portal, or pass --workspace-config"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AmlError(f"workspace config {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AmlError(f"workspace config {path}: expected a JSON object")
    aliases = {
        "subscription_id": ("subscription_id", "subscriptionId"),
        "resource_group": ("resource_group", "resourceGroup", "resource_group_name"),
        "workspace_name": ("workspace_name", "workspaceName"),
    }
    found: dict[str, str] = {}
    for key, names in aliases.items():
        value = next((data[name] for name in names if data.get(name)), None)
        if value is not None:
            found[key] = str(value)
    missing = [k for k in aliases if k not in found]
    if missing:
        raise AmlError(f"workspace config {path}: missing {', '.join(missing)}")
    return found


def default_credential() -> Any:
    """``azure-identity``'s default chain, checked by asking it for a token.

    Raises:
        AmlError: No credential in the chain works (what to do about it, in one line).
    """
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential

    # The chain logs every attempt as a warning: the one line below says it better.
    quiet = logging.getLogger("azure.identity")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    credential = None
    try:
        credential = DefaultAzureCredential()
        credential.get_token("https://management.azure.com/.default")
    except Exception as exc:
        if isinstance(exc, ClientAuthenticationError) and credential is not None:
            # Every credential of the chain was tried and failed; name them as the SDK does.
            tried = [
                getattr(c, "_credential_name", type(c).__name__) for c in credential.credentials
            ]
            detail = "tried " + ", ".join(name.removesuffix("Credential") for name in tried)
        else:
            detail = f"{type(exc).__name__}: {exc}"
        raise AmlError(
            "no usable Azure credentials: sign in with `az login`, or set AZURE_TENANT_ID, "
            "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal, or run where a "
            f"managed identity is assigned (DefaultAzureCredential {detail})"
        ) from None
    finally:
        quiet.setLevel(level)
    return credential


def ml_client(workspace_config: Path | None = None, credential: Any = None) -> Any:
    """An ``MLClient`` for the workspace (default ``config.json``), credentials checked first."""
    require_sdk()
    from azure.ai.ml import MLClient

    ws = read_workspace_config(workspace_config or Path("config.json"))
    if credential is None:
        credential = default_credential()
    return MLClient(credential, ws["subscription_id"], ws["resource_group"], ws["workspace_name"])


@contextlib.contextmanager
def _calling_azure(what: str) -> Iterator[None]:
    """Any error of the SDK or the network inside, as one ``AmlError`` line about ``what``."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    try:
        yield
    except ClientAuthenticationError as exc:
        raise AmlError(f"{what}: Azure refused the credentials: {message(exc)}") from None
    except HttpResponseError as exc:
        raise AmlError(f"{what}: {message(exc)}") from None
    except Exception as exc:
        raise AmlError(f"{what}: cannot reach Azure ({type(exc).__name__}: {exc})") from None


def _existing(get: Callable[[], Any], what: str) -> Any:
    """``get()``'s entity, or None when the workspace has none."""
    from azure.core.exceptions import ResourceNotFoundError

    with _calling_azure(f"looking up {what}"):
        try:
            return get()
        except ResourceNotFoundError:
            return None


def ensure_compute(client: Any, compute: Any, echo: Echo, nodes: int | None = None) -> None:
    """Create the cluster if it does not exist.

    Raises:
        AmlError: An existing compute cannot give the job ``nodes`` nodes (the job would
            wait in the queue for nodes that never come).
    """
    existing = _existing(lambda: client.compute.get(compute.name), f"compute {compute.name}")
    if existing is not None:
        _check_existing_compute(existing, compute, echo, nodes)
        return
    echo(f"creating compute cluster {compute.name} ({compute.size}, 0..{compute.max_instances})")
    with _calling_azure(f"creating compute {compute.name}"):
        client.compute.begin_create_or_update(compute).result()


def _check_existing_compute(existing: Any, compute: Any, echo: Echo, nodes: int | None) -> None:
    """An existing compute must be a cluster that scales to the job's nodes."""
    kind = str(getattr(existing, "type", "") or "").lower()
    if kind and kind != "amlcompute":
        raise AmlError(
            f"compute {compute.name} is a {kind}, not a compute cluster (AmlCompute): "
            "pick a cluster with --compute, or a new name to have one created"
        )
    size = getattr(existing, "size", None)
    if size and size.lower() != str(compute.size).lower():
        echo(f"note: compute {compute.name} exists with VM size {size} (kept as it is)")
    most = getattr(existing, "max_instances", None)
    if nodes is not None and most is not None and int(most) < nodes:
        raise AmlError(
            f"compute {compute.name} scales to at most {most} node(s), the job asks for "
            f"{nodes}: it would wait for nodes that never come. Raise the cluster's maximum "
            "(Studio: Compute, or `az ml compute update --max-instances`), pass --nodes "
            f"{most}, or --compute with another name"
        )


def ensure_environment(client: Any, environment: Any, rebuild: bool, echo: Echo) -> str:
    """Reuse the named environment's latest version, or register one; returns its reference.

    The latest version is reused only when it was made from the same thing: its
    ``simgym_source`` tag (the staged build context's digest, or the image name) must match.
    Otherwise — another ``--image``, a new simgym, changed sim requirements — a new version
    is registered, so a job never runs on an image it did not ask for.
    """
    latest = _existing(
        lambda: client.environments.get(environment.name, label="latest"),
        f"environment {environment.name}",
    )
    wanted = (environment.tags or {}).get(SOURCE_TAG)
    if latest is not None and not rebuild:
        ref = f"{latest.name}:{latest.version}"
        have = (latest.tags or {}).get(SOURCE_TAG)
        if wanted is None or have == wanted:
            echo(f"using environment {ref} (--rebuild-environment registers a new version)")
            return f"azureml:{ref}"
        echo(
            f"note: environment {ref} was made from {have or 'something simgym did not tag'}, "
            f"this job needs {wanted}: registering a new version"
        )
    version = "1"
    if latest is not None:
        current = str(latest.version)
        version = str(int(current) + 1) if current.isdigit() else time.strftime("%Y%m%d%H%M%S")
    environment.version = version
    echo(f"registering environment {environment.name}:{version} (the image builds on first use)")
    with _calling_azure(f"registering environment {environment.name}"):
        created = client.environments.create_or_update(environment)
    return f"azureml:{created.name}:{created.version}"


def validate_job(client: Any, job: Any) -> None:
    """The SDK's local checks of a job, with their errors surfaced.

    ``jobs.validate`` on a ``CommandJob`` only checks git code paths (it returns a result, and
    does not raise, unless asked); the schema and path checks — a code folder that does not
    exist, say — run on the job's command node. Both are asked, and every error is reported.

    Raises:
        AmlError: What the SDK found, one ``field: message`` per error.
    """
    # `_validate` and `_to_node` are the SDK's private methods: another SDK version may
    # lack them (then only `jobs.validate` runs) or fail in them in its own way. Whatever
    # the SDK raises (its ValidationException, marshmallow's ValidationError, a TypeError
    # from a malformed field...) is the job not validating, said in one line.
    checks: list[Any] = [job]
    try:
        own_check = getattr(job, "_validate", None)
        if callable(own_check):
            own_check()  # command and environment present (what create_or_update checks)
        to_node = getattr(job, "_to_node", None)
        if callable(to_node):
            checks.append(to_node())
        errors: dict[str, str] = {}
        for result in [client.jobs.validate(j) for j in checks]:
            errors.update(getattr(result, "error_messages", None) or {})
    except Exception as exc:
        raise AmlError(f"the job does not validate: {message(exc)}") from None
    if errors:
        detail = "; ".join(
            f"{key.removeprefix('component.')}: {str(msg).split(';')[0].strip()}"
            for key, msg in errors.items()
        )
        raise AmlError(f"the job does not validate: {detail}")


def studio_url(job: Any, client: Any) -> str:
    """The job's page in Azure ML Studio."""
    url = getattr(job, "studio_url", None)
    if url:
        return str(url)
    return (
        f"https://ml.azure.com/runs/{job.name}?wsid=/subscriptions/{client.subscription_id}"
        f"/resourcegroups/{client.resource_group_name}/workspaces/{client.workspace_name}"
    )


def submit(
    plan: Plan, *, credential: Any = None, client: Any = None, echo: Echo = print
) -> Submitted:
    """Create what is missing and submit the job.

    Everything that can be checked offline (workspace config, credentials) is checked
    before anything is created or uploaded. The image's build context is staged in a
    temporary folder for the upload, and removed after it.

    Raises:
        AmlError: One line naming what is missing or what Azure refused.
    """
    work = Path(tempfile.mkdtemp(prefix="simgym-aml-"))
    try:
        stage_environment(plan, work)
        settings = plan.settings
        for note in plan.notes:
            echo(f"note: {note}")
        if client is None:
            client = ml_client(Path(settings.workspace_config), credential)
        validate_job(client, plan.job)  # local checks: nothing is created when they fail
        ensure_compute(client, plan.compute, echo, settings.nodes)
        env_ref = ensure_environment(client, plan.environment, settings.rebuild_environment, echo)
        plan.job.environment = env_ref
        echo(f"submitting {plan.spec_rel} from {plan.code_dir} to {settings.nodes} node(s)")
        with _calling_azure("submitting the job"):
            job = client.jobs.create_or_update(plan.job, experiment_name=plan.job.experiment_name)
        return Submitted(job.name, studio_url(job, client), env_ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def job_status(name: str, workspace_config: Path | None, client: Any = None) -> list[str]:
    """One line per fact: status, Studio URL, experiment, compute."""
    client = client or ml_client(workspace_config)
    with _calling_azure(f"looking up job {name}"):
        job = client.jobs.get(name)
    lines = [
        f"job: {job.name}",
        f"status: {job.status}",
        f"experiment: {getattr(job, 'experiment_name', '')}",
        f"compute: {getattr(job, 'compute', '')}",
        f"studio: {studio_url(job, client)}",
    ]
    if str(job.status) in ("Failed", "Canceled", "NotResponding"):
        lines.append(f"see why: simgym logs {job.name}")
    return lines


def job_logs(
    name: str,
    workspace_config: Path | None,
    to: Path | None = None,
    lines: int = 40,
    client: Any = None,
) -> list[str]:
    """Download a job's logs and outputs, then summarize them."""
    client = client or ml_client(workspace_config)
    dest = to or Path("aml-logs") / name
    dest.mkdir(parents=True, exist_ok=True)
    with _calling_azure(f"downloading job {name}"):
        client.jobs.download(name, download_path=str(dest), all=True)
    return [f"downloaded to {dest}", *summarize_logs(dest, lines)]


def summarize_logs(root: Path, lines: int = 40) -> list[str]:
    """``error.txt`` files first, then each node's last lines, from a downloaded job folder."""
    out: list[str] = []
    for error in _files(root, "error.txt"):
        out += [f"=== {error.relative_to(root)} ===", error.read_text(errors="replace").rstrip()]
    for log_file in _files(root, "std_log*.txt"):
        text = log_file.read_text(errors="replace").splitlines()
        out += [f"=== {log_file.relative_to(root)} (last {min(lines, len(text))} lines) ==="]
        out += text[-lines:]
    if not out:
        out.append(f"no error.txt and no std_log*.txt under {root}")
    return out


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file())
