"""Azure ML submission (azure-ai-ml v2): plan the job, stage its image, talk to the workspace.

- ``plan``: the ``aml:`` settings and the SDK's compute, environment and job, built offline;
  the dry run's YAML.
- ``image``: an image's Docker build context, with a wheel of this simgym in it.
- ``workspace``: credentials, the ``MLClient``, cluster and environment, submit, status, logs.
- ``errors``: ``AmlError`` and the SDK import check.

``azure-ai-ml`` is the ``aml`` extra and imported lazily.
"""

from launcher.aml.errors import AmlError, require_sdk
from launcher.aml.image import (
    DOCKER_DIR,
    SOURCE_ITEMS,
    folder_digest,
    source_checkout,
    stage_build_context,
    stage_simgym_wheel,
)
from launcher.aml.plan import (
    SOURCE_TAG,
    AmlSettings,
    Plan,
    dry_run_hint,
    plan_submission,
    stage_environment,
    write_dry_run,
)
from launcher.aml.workspace import (
    Submitted,
    job_logs,
    job_status,
    ml_client,
    submit,
    validate_job,
)

__all__ = [
    "DOCKER_DIR",
    "SOURCE_ITEMS",
    "SOURCE_TAG",
    "AmlError",
    "AmlSettings",
    "Plan",
    "Submitted",
    "dry_run_hint",
    "folder_digest",
    "job_logs",
    "job_status",
    "ml_client",
    "plan_submission",
    "require_sdk",
    "source_checkout",
    "stage_build_context",
    "stage_environment",
    "stage_simgym_wheel",
    "submit",
    "validate_job",
    "write_dry_run",
]
