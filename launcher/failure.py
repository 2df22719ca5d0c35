"""What a failed training leaves: ``error.txt``'s diagnosis and the one-line error raised.

``error.txt``'s first paragraph says what failed (which sim, which call, the sim's own
error), from what simgym itself saw: the exception, the sidecar pool's events and the
failed sim calls the env runners appended to ``sim_errors.log``.
"""

from __future__ import annotations

import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from gymclient.errors import SimgymError
from launcher.sidecars import SidecarPool, log_error_line

if TYPE_CHECKING:
    from launcher.raysims import RaySims

# Failed sim calls, appended by the env runners (launcher.rllib_setup); error.txt quotes
# the last one.
SIM_ERROR_LOG = "sim_errors.log"


class TrainingError(SimgymError):
    """Training failed; ``error.txt`` in the run folder says why.

    Attributes:
        error_file: That ``error.txt``; None for a run that cannot even start (a
            ``--resume`` folder without a run or a checkpoint).
    """

    def __init__(self, message: str, *, error_file: Path | None = None) -> None:
        super().__init__(message)
        self.error_file = error_file


class SetupError(SimgymError):
    """A setup problem found before training started (sims, preflight); one line.

    The run folder already exists by then, so ``error.txt`` there explains it too.

    Attributes:
        cause: The original error (e.g. ``SpecMismatch``, ``AuthError``).
        error_file: The run folder's ``error.txt``.
    """

    def __init__(self, message: str, *, cause: BaseException, error_file: Path) -> None:
        super().__init__(message)
        self.cause, self.error_file = cause, error_file


def message(exc: BaseException) -> str:
    """The message's first line (a simgym error's message is one line; Ray's are not)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def first_line(exc: BaseException) -> str:
    """One line about ``exc``: a simgym error's message, else ``Type: first line``."""
    if isinstance(exc, SimgymError):
        return message(exc)
    return f"{type(exc).__name__}: {message(exc)}" if str(exc).strip() else type(exc).__name__


def sim_error_log_size(run_dir: Path) -> int:
    """Where this run's part of ``sim_errors.log`` starts (a resumed run appends to it)."""
    try:
        return (run_dir / SIM_ERROR_LOG).stat().st_size
    except OSError:
        return 0


def _sim_error_lines(run_dir: Path, start: int = 0) -> list[str]:
    """The failed sim calls the env runners wrote to ``sim_errors.log`` from byte ``start``."""
    try:
        with open(run_dir / SIM_ERROR_LOG, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def _last_sim_error(lines: list[str]) -> str:
    """The message of the last line of ``sim_errors.log`` ("<date> <time> <message>")."""
    last = lines[-1] if lines else ""
    return last.split(" ", 2)[2] if last.count(" ") >= 2 else last


def write_error(
    run_dir: Path,
    what: str,
    exc: BaseException,
    pool: SidecarPool | RaySims | None,
    sim_errors: int = 0,
    sim_error_start: int = 0,
    checkpoint: str | None = None,
) -> Path:
    """``error.txt``: one paragraph first (which sim, which call, the sim's error), then details.

    The paragraph comes from what simgym itself saw — the exception's first line, the
    sidecar pool's events (a server that died or could not restart, with its log's error),
    and the last failed sim call the env runners counted — so it reads as a diagnosis
    even when the exception is a long Ray traceback. ``checkpoint``: the final checkpoint
    a run that could not go on saved, named last.
    """
    headline = first_line(exc)
    sentences = [f"simgym train failed while {what}: {headline.rstrip('.')}."]
    if pool is not None:
        for event in pool.events:
            if event.kind != "restarted" and event.detail not in headline:
                sentences.append(f"{event.detail[:1].upper()}{event.detail[1:]}.")
        if pool.total_restarts:
            sentences.append(f"Sim server restarts in this run: {pool.total_restarts}.")
    # This run's failed calls only: a resumed run's file still holds the previous run's.
    sim_error_lines = _sim_error_lines(run_dir, sim_error_start)
    last_call = _last_sim_error(sim_error_lines)
    if last_call:
        counted = f" ({sim_errors} sim call errors counted)" if sim_errors else ""
        sentences.append(f"Last failed sim call{counted}: {last_call.rstrip('.')}.")
    if checkpoint:
        sentences.append(f"Final checkpoint: {checkpoint} (--resume {run_dir} continues from it).")
    paragraph = textwrap.fill(
        " ".join(sentences), width=100, break_long_words=False, break_on_hyphens=False
    )
    lines = [paragraph, ""]
    if pool is not None:
        for event in pool.events:
            lines.append(f"sidecar {event.kind}: {event.detail}")
        for i, server in enumerate(pool.servers):
            tail = server.log_tail(10)
            if "Traceback" in tail or log_error_line(tail):
                lines += [f"--- last lines of sim server {i} log ({server.log_file}) ---", tail]
    if sim_error_lines:
        lines += [f"--- last failed sim calls ({run_dir / SIM_ERROR_LOG}) ---"]
        lines += sim_error_lines[-10:]
    lines += ["", "--- traceback ---", "".join(traceback.format_exception(exc))]
    path = run_dir / "error.txt"
    path.write_text("\n".join(lines))
    return path


# The `train` extra: a missing one is an install problem, not a training failure.
_TRAIN_EXTRA = ("ray", "torch", "mlflow", "gymnasium")
_INSTALL_HINT = "pip install 'simgym[train]'"


def missing_extra(exc: BaseException) -> str | None:
    """The install hint when ``exc`` is a missing package of the ``train`` extra, else None."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top in _TRAIN_EXTRA:
            return f"training needs the train extra ({top} is not installed): {_INSTALL_HINT}"
    return None
