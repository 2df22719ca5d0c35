"""A sim that ships as its own image: its command, read with ``docker image inspect``.

``simgym submit --sim-image IMAGE`` (or ``sim.image`` in the training spec) builds the job's
environment FROM the sim's image (``docker/sim-train.Dockerfile``), and every node runs the
image's sim command as supervised sidecars. The command is the training spec's
``sim.launch.command`` when it gives one; otherwise the image's ``ENTRYPOINT`` + ``CMD``, run
from its ``WORKDIR``, read here when Docker is at hand at submit time and baked into the
combined image (``SIMGYM_SIM_COMMAND``, ``SIMGYM_SIM_CWD``; ``launcher.simcommand``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from gymclient.errors import SpecError
from launcher.aml.errors import AmlError

# Where sim-train.Dockerfile installs simgym's training side (its own venv, last on PATH).
TRAIN_PREFIX = "/opt/simgym-train"
# A first word that makes the rest a shell script: flags appended to it would not reach the
# server (they become the script's $0, $1 ...).
_SHELLS = ("sh", "bash", "dash", "ash", "zsh")


@dataclass(frozen=True)
class SimImage:
    """The sim image a job's environment is built from, and the sim command it runs.

    Attributes:
        name: The image reference (``registry/name:tag`` or ``...@sha256:...``).
        command: The image's ENTRYPOINT + CMD (None: the spec's ``sim.launch.command`` is used).
        cwd: The image's WORKDIR (``/`` when it sets none), with ``command``.
        source: Where the command comes from, for messages.
    """

    name: str
    command: list[str] | None
    cwd: str | None
    source: str

    def build_args(self) -> dict[str, str]:
        """The ``ARG`` defaults of the staged ``sim-train.Dockerfile``."""
        args = {"SIM_IMAGE": self.name, "SIM_COMMAND": "", "SIM_CWD": ""}
        if self.command is not None:
            args["SIM_COMMAND"] = command_json(self.command)
            args["SIM_CWD"] = self.cwd or "/"
        return args


def command_json(words: list[str]) -> str:
    r"""``words`` as JSON that survives a single-quoted Dockerfile ``ARG`` default unchanged.

    ``'`` and ``$`` are written as JSON escapes (``\u0027``, ``\u0024``): the value then
    holds no quote to end the Dockerfile's quoting and nothing for it to substitute.
    """
    text = json.dumps(words, ensure_ascii=True, separators=(",", ":"))
    return text.replace("'", "\\u0027").replace("$", "\\u0024")


def inspect_config(
    name: str, docker: str = "docker", timeout: float = 60.0
) -> dict[str, Any] | str:
    """The ``Config`` of a local image (``docker image inspect``), or why it cannot be read.

    Returns:
        The image's config, or a string: why Docker is not at hand (no CLI, no daemon).

    Raises:
        AmlError: Docker answers but has no such image (with the ``docker pull`` to run).
    """
    exe = shutil.which(docker)
    if exe is None:
        return f"no {docker} command on PATH"
    try:
        proc = subprocess.run(
            [exe, "image", "inspect", "--format", "{{json .Config}}", name],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker image inspect did not answer ({exc})"
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        if "no such image" in proc.stderr.lower():
            raise AmlError(
                f"sim image {name}: not in this machine's Docker (docker pull {name}), and its "
                "command is needed: pull it, or give sim.launch.command in the training spec"
            )
        return f"docker image inspect failed: {err}"
    try:
        config = json.loads(proc.stdout)
    except ValueError:
        return f"docker image inspect said {proc.stdout.strip()[:200]!r}"
    return config if isinstance(config, dict) else {}


def image_command(name: str, config: dict[str, Any]) -> tuple[list[str], str]:
    """The sim command of an image (ENTRYPOINT + CMD) and its folder (WORKDIR, else ``/``).

    Raises:
        AmlError: The image has no command, a shell-form one (simgym's flags would not reach
            the server), or one that only prints help (a generic sim image whose target is
            given at ``docker run``).
    """
    words = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    given = " ".join(words)
    if not words:
        raise AmlError(
            f"sim image {name} has no ENTRYPOINT or CMD: give the sim's command in the training "
            "spec (sim.launch.command, and cwd)"
        )
    if len(words) >= 2 and words[0].rsplit("/", 1)[-1] in _SHELLS and words[1] == "-c":
        raise AmlError(
            f"sim image {name} runs a shell ({given!r}): the flags simgym appends (--unix, "
            "--address-file, ...) would not reach the server; use an exec-form ENTRYPOINT/CMD, "
            "or give sim.launch.command"
        )
    if any(w in ("--help", "-h") for w in words):
        raise AmlError(
            f"sim image {name}'s command is {given!r}, which only prints help: build an image "
            'that names its sim (CMD ["sim.py:MySim"]), or give sim.launch.command'
        )
    return words, str(config.get("WorkingDir") or "/")


def resolve_sim_image(
    name: str, spec_command: list[str] | None, *, spec_source: str, docker: str = "docker"
) -> SimImage:
    """The sim image and the command its nodes run.

    The spec's ``sim.launch.command`` wins; otherwise the image's ENTRYPOINT + CMD, which
    needs Docker at hand (``docker image inspect`` of a local image).

    Raises:
        SpecError: No command to be had: Docker is not at hand (the file and key to give it in).
        AmlError: Docker has no such image, or the image's command cannot serve.
    """
    if spec_command is not None:
        return SimImage(name, None, None, "the training spec's sim.launch.command")
    config = inspect_config(name, docker)
    if isinstance(config, str):
        raise SpecError(
            spec_source,
            "sim.launch.command",
            f"the sim image {name}'s command cannot be read ({config}): give it here, or run "
            "simgym submit where Docker has the image",
        )
    words, cwd = image_command(name, config)
    return SimImage(name, words, cwd, f"{name}'s ENTRYPOINT + CMD (docker image inspect)")
