"""``AmlError``, the one error of Azure ML submission, and the check that the SDK is installed."""

from __future__ import annotations

from gymclient.errors import SimgymError

INSTALL_HINT = 'Azure ML support needs the aml extra: pip install "simgym[aml]"'


class AmlError(SimgymError):
    """A submission problem, in one line."""


def require_sdk() -> None:
    """Import check for ``azure-ai-ml`` and ``azure-identity``.

    Raises:
        AmlError: With the install command.
    """
    try:
        import azure.ai.ml
        import azure.identity  # noqa: F401
    except ImportError as exc:
        raise AmlError(f"{INSTALL_HINT} ({exc.name or exc} is missing)") from None
