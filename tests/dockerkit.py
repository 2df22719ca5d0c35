"""Real Docker for the tests: base stand-ins, image builds, networks and containers.

The registries with the images' bases (Docker Hub, mcr) cannot be reached from the project's
machines, so ``ensure_bases`` builds **local stand-ins** for the pinned ``FROM`` images —
Debian bookworm from ``debootstrap``, imported with ``docker import`` and tagged exactly as
the Dockerfiles name them — once per machine (cached by tag and recipe). Builds run with the
legacy builder and ``--pull=false``, so Docker never tries to fetch the real bases.

pip inside a build uses this host's package sources, as a build behind a corporate proxy or
mirror must (docs/docker.md): ``pip_build_args`` turns ``pip config`` into build args; local
folders (``find-links``, ``file://`` indexes) are served over HTTP on the Docker bridge's
gateway by a small read-only file server, and the CA bundle pip trusts goes into the build
context.

Also a command line, to reproduce by hand::

    python -m tests.dockerkit bases             # build the stand-ins (once per machine)
    python -m tests.dockerkit build sim|train   # build an image as the tests do
    python -m tests.dockerkit build all         # every image the tests use (two at a time)
    python -m tests.dockerkit build all --low-priority   # the same on idle CPU only
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = ROOT / "docker"
# The tags the tests' images get (a prefix of our own: `docker images simgym-test/*`).
TAG_PREFIX = "simgym-test"
# Every container and network made here carries this label (leftovers are easy to find).
LABEL = "org.simgym.test=1"
# The stand-ins carry this label, with the digest of the recipe that made them.
STANDIN_LABEL = "org.simgym.standin"
# Where the images' Dockerfiles copy their build context (CA bundles put there are found).
CONTEXT_IN_IMAGE = "/opt/simgym-build"
CERT_NAME = "pip-ca.pem"
# The port the file server that gives builds this host's local wheel folders tries first.
FILE_SERVER_PORT = 38517
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def docker_cli() -> str:
    """The docker CLI: the first on PATH (its legacy builder talks to Debian's 20.10 engine)."""
    return shutil.which("docker") or "docker"


def _env() -> dict[str, str]:
    # The legacy builder: BuildKit needs buildx, which the installed CLIs lack.
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


def docker(
    *args: str, check: bool = True, timeout: float = 600.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``docker ARGS`` and capture its output (raises with the tail of stderr)."""
    proc = subprocess.run(
        [docker_cli(), *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({proc.returncode}):\n{tail}")
    return proc


def docker_available() -> str | None:
    """None when a Docker daemon answers, else why not (one line)."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (apt-get install docker.io; make ci-setup does it)"
    try:
        proc = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 20 s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"no Docker daemon answers ({last}); start it: dockerd & (make ci-setup does it)"
    return None


def require_docker() -> None:
    """In a test: fail (CI, or SIMGYM_REQUIRE_DOCKER=1) or skip when Docker is missing."""
    import pytest

    reason = docker_available()
    if reason is None:
        return
    if os.environ.get("CI") or os.environ.get("SIMGYM_REQUIRE_DOCKER"):
        pytest.fail(f"Docker is required here: {reason}")
    pytest.skip(f"Docker not available: {reason}")


# ----------------------------------------------------------------------------- base stand-ins


@dataclass(frozen=True)
class Standin:
    """How to make a stand-in for one pinned base image from Debian bookworm."""

    what: str  # the image it stands for, in words (its label)
    packages: tuple[str, ...]  # debootstrap --include
    more: tuple[str, ...] = ()  # installed with apt-get in a copy of the first rootfs
    links: Mapping[str, str] = field(default_factory=dict)  # path -> symlink target
    changes: tuple[str, ...] = ()  # docker import --change


PYTHON_BASE = "python:3.11.11-slim-bookworm"
AZUREML_BASE = "mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04:20250303.v1"
_DEB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STANDINS: dict[str, Standin] = {
    # Docker's official Python image: a CPython under /usr/local (here: Debian's 3.11 linked
    # there), ca-certificates, no compilers.
    PYTHON_BASE: Standin(
        what="python",
        packages=("python3", "python3-venv", "ca-certificates"),
        links={
            f"/usr/local/bin/{n}": "/usr/bin/python3.11"
            for n in ("python", "python3", "python3.11")
        },
        changes=(f"ENV PATH={_DEB_PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'),
    ),
    # Azure ML's Open MPI base: Open MPI (Debian's 4.1, not 5.0), no conda, no CUDA; and
    # python3.11 with venv, which makes train.Dockerfile skip its deadsnakes step.
    AZUREML_BASE: Standin(
        what="azureml-openmpi",
        packages=("python3", "python3-venv", "ca-certificates"),
        more=("openmpi-bin",),
        changes=(f"ENV PATH={_DEB_PATH}", 'CMD ["bash"]'),
    ),
}
# Which Dockerfile needs which base (the GPU base has CUDA: no stand-in).
KIND_BASE = {"sim": PYTHON_BASE, "train": AZUREML_BASE}


def _recipe_digest(tag: str, spec: Standin) -> str:
    text = json.dumps([tag, SUITE, spec.packages, spec.more, dict(spec.links), spec.changes])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _image_label(tag: str, label: str) -> str | None:
    proc = docker(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', tag, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def image_exists(tag: str) -> bool:
    """Whether the engine has an image of that name."""
    return docker("image", "inspect", tag, check=False).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses for bookworm (deb.debian.org when none is found)."""
    for path in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(
        Path("/etc/apt/sources.list.d").glob("*")
    ):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822: URIs: ... Suites: bookworm ...
            for stanza in text.split("\n\n"):
                keys = dict(
                    ln.split(":", 1) for ln in stanza.splitlines() if ":" in ln and ln[:1] != "#"
                )
                suites = keys.get("Suites", "").split()
                if (
                    SUITE in suites
                    and "/debian" in keys.get("URIs", "")
                    and "security" not in keys.get("URIs", "")
                ):
                    return keys["URIs"].split()[0].strip()
        else:
            for ln in text.splitlines():
                parts = ln.split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    return parts[1]
    return DEFAULT_MIRROR


def _clean_rootfs(root: Path) -> None:
    """What Debian's slim images leave out: apt lists and caches, docs, man pages, logs."""
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "usr/share/doc/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "var/log/apt/*",
        "var/log/*.log",
    ):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _import(root: Path, tag: str, spec: Standin, digest: str) -> None:
    for link, target in spec.links.items():
        path = root / link.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    changes = [*spec.changes, f"LABEL {STANDIN_LABEL}={spec.what}-{digest}"]
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    args = [docker_cli(), "import"]
    for change in changes:
        args += ["--change", change]
    try:
        subprocess.run(
            [*args, "-", tag], stdin=tar.stdout, check=True, env=_env(), capture_output=True
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()


def ensure_bases(tags: Sequence[str] | None = None, log=print) -> dict[str, str]:
    """Build the stand-ins that are missing (or made by another recipe); tag -> image id.

    Needs root, debootstrap and a Debian mirror (the host's apt mirror). One debootstrap
    (minbase) serves all of them: a stand-in with more packages installs them in a copy.
    """
    wanted = list(tags or STANDINS)
    todo = [
        t
        for t in wanted
        if _image_label(t, STANDIN_LABEL) != f"{STANDINS[t].what}-{_recipe_digest(t, STANDINS[t])}"
    ]
    if todo:
        _build_bases(todo, log)
    return {t: docker("image", "inspect", "--format", "{{.Id}}", t).stdout.strip() for t in wanted}


def _build_bases(tags: list[str], log) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: apt-get install debootstrap (make ci-setup)")
    packages = sorted({p for t in tags for p in STANDINS[t].packages})
    with tempfile.TemporaryDirectory(prefix="simgym-standin-", dir="/var/tmp") as tmp:
        first = Path(tmp) / "rootfs"
        start = time.monotonic()
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                SUITE,
                str(first),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        log(f"dockerkit: debootstrap {SUITE} minbase in {time.monotonic() - start:.0f} s")
        # The stand-ins with more packages first: they start from a copy with apt's lists.
        for tag in sorted(tags, key=lambda t: not STANDINS[t].more):
            spec = STANDINS[tag]
            start = time.monotonic()
            root = first
            if spec.more:
                root = Path(tmp) / f"rootfs-{spec.what}"
                subprocess.run(["cp", "-a", str(first), str(root)], check=True)
                subprocess.run(
                    [
                        "chroot",
                        str(root),
                        "apt-get",
                        "install",
                        "-y",
                        "-q",
                        "--no-install-recommends",
                        *spec.more,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                )
            _clean_rootfs(root)
            _import(root, tag, spec, _recipe_digest(tag, spec))
            if root != first:
                shutil.rmtree(root, ignore_errors=True)
            log(f"dockerkit: stand-in {tag} in {time.monotonic() - start:.0f} s")


# ----------------------------------------------------------------------------- pip's sources


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of files under the allowed folders, at their host paths; nothing else."""

    roots: tuple[str, ...] = ()

    def translate_path(self, path: str) -> str:
        local = os.path.normpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        if any(local == r or local.startswith(r.rstrip("/") + "/") for r in self.roots):
            return local
        return "/nonexistent-simgym-path"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: a build fetches hundreds of files


@functools.cache
def bridge_gateway() -> str:
    """The default bridge's gateway: the host's address as builds (legacy builder) see it."""
    info = json.loads(docker("network", "inspect", "bridge", "--format", "{{json .}}").stdout)
    config = (info.get("IPAM", {}).get("Config") or [{}])[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    # Docker's default bridge often reports no gateway: the bridge interface holds it.
    device = info.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    proc = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", device],
        capture_output=True,
        text=True,
        check=False,
    )
    for word in proc.stdout.split():
        if "/" in word and word[0].isdigit():
            return word.split("/")[0]
    # Else the subnet's first address, where Docker puts the gateway.
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


@functools.cache
def _file_server(roots: tuple[str, ...]) -> str:
    """Serve ``roots`` read-only on the bridge's gateway for this process; its ``host:port``."""
    handler = type("Handler", (_FileHandler,), {"roots": roots})
    try:
        # A fixed port: build args are part of Docker's cache key, so the same URLs keep
        # the install layers cached from one run to the next.
        server = http.server.ThreadingHTTPServer((bridge_gateway(), FILE_SERVER_PORT), handler)
    except OSError:  # taken (another test process): any port, at the price of the cache
        server = http.server.ThreadingHTTPServer((bridge_gateway(), 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="dockerkit-files").start()
    return f"{bridge_gateway()}:{server.server_address[1]}"


def host_pip_config() -> dict[str, str]:
    """pip's configuration on this host (files and PIP_* variables), as ``pip config list``."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    config: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return config


def _local_path(source: str) -> str | None:
    if source.startswith("file://"):
        return urllib.parse.urlsplit(source).path
    if source.startswith("/"):
        return source
    return None


def pip_build_args(context: Path | None = None) -> list[str]:
    """``--build-arg`` options that give pip inside a build this host's package sources.

    ``index-url`` and http(s) extra indexes pass as they are; local ``find-links`` folders
    and ``file://`` indexes are served over HTTP on the bridge's gateway (an index folder's
    parent is served too: its pages link to ``../../files``) and marked trusted; the CA
    bundle pip trusts (``cert``) is copied into ``context`` as ``pip-ca.pem`` and named with
    ``PIP_CERT``. Empty when pip has no settings.
    """
    config = host_pip_config()
    local: dict[str, str] = {}  # source -> host path
    roots: set[str] = set()
    for key, is_index in (("index-url", True), ("extra-index-url", True), ("find-links", False)):
        for source in config.get(key, "").split():
            path = _local_path(source)
            if path and Path(path).exists():
                local[source] = path.rstrip("/")
                roots.add(str(Path(path).parent) if is_index else path.rstrip("/"))
    served = _file_server(tuple(sorted(roots))) if roots else ""

    def translate(sources: str) -> str:
        out = []
        for s in sources.split():
            if s in local:
                out.append(f"http://{served}{local[s]}/")
            elif _local_path(s) is None:
                out.append(s)  # a remote index: as it is
        return " ".join(out)

    args: dict[str, str] = {}
    for key, var in (
        ("index-url", "PIP_INDEX_URL"),
        ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
        ("find-links", "PIP_FIND_LINKS"),
    ):
        value = translate(config.get(key, ""))
        if value:
            args[var] = value
    trusted = config.get("trusted-host", "").split() + ([served] if served else [])
    if trusted:
        args["PIP_TRUSTED_HOST"] = " ".join(trusted)
    cert = config.get("cert")
    if cert and Path(cert).is_file() and context is not None:
        shutil.copy2(cert, context / CERT_NAME)
        args["PIP_CERT"] = f"{CONTEXT_IN_IMAGE}/{CERT_NAME}"
    out: list[str] = []
    for var, value in args.items():
        out += ["--build-arg", f"{var}={value}"]
    return out


# ----------------------------------------------------------------------------- builds


@dataclass(frozen=True)
class BuildResult:
    """An image built (or found in Docker's build cache)."""

    tag: str
    seconds: float
    size_mb: float


def image_size_mb(tag: str) -> float:
    """The image's size as ``docker images`` counts it (all layers), in MB (10^6 bytes)."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e6


def simgym_cli() -> list[str]:
    """simgym's command line, from this interpreter's environment."""
    exe = Path(sys.executable).parent / "simgym"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "launcher.cli"]


def stage_context(
    kind: str,
    dest: Path,
    *,
    requirements: Path | None = None,
    context_args: Sequence[str] = (),
) -> Path:
    """``simgym docker-context KIND DEST`` (simgym's own staging, as a user runs it)."""
    cmd = [*simgym_cli(), "docker-context", kind, str(dest), *context_args]
    if requirements is not None:
        cmd += ["--requirements", str(requirements)]
    # Same sources, same wheel bytes: Docker's cache then keeps the install layers.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}")
    return dest


# Extra `docker build` options of this process: `build all --low-priority` (make test-all
# builds the images beside the default suite) gives builds the smallest CPU share, so they
# take only CPU the tests leave idle. Not part of Docker's cache key.
BUILD_OPTIONS: list[str] = []


def build(context: Path, tag: str, *, build_args: Sequence[str] = (), log=print) -> BuildResult:
    """``docker build --pull=false`` of a staged context with this host's pip build args."""
    start = time.monotonic()
    args = ["build", "--pull=false", *BUILD_OPTIONS, "-t", tag, *pip_build_args(context),
            *build_args, str(context)]  # fmt: skip
    proc = docker(*args, check=False, timeout=1800)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise RuntimeError(f"docker build of {tag} failed:\n{tail}")
    result = BuildResult(tag, seconds, image_size_mb(tag))
    log(f"dockerkit: built {tag} in {seconds:.0f} s, {result.size_mb:.0f} MB")
    return result


def build_context_image(
    kind: str,
    tag: str | None = None,
    *,
    requirements: Path | None = None,
    extra_files: Mapping[str, Path] | None = None,
    context_args: Sequence[str] = (),
    build_args: Sequence[str] = (),
) -> BuildResult:
    """Stage KIND's context with ``simgym docker-context`` and build it (bases ensured first).

    ``extra_files`` (name in the context -> file) are copied beside the staged files;
    ``context_args`` go to ``simgym docker-context`` (e.g. ``--sim-image IMAGE``).
    """
    tag = tag or f"{TAG_PREFIX}/{kind}:latest"
    if os.environ.get("SIMGYM_DOCKER_REUSE") and image_exists(tag):
        # Working on the tests themselves: take the image as it is (it may be stale).
        return BuildResult(tag, 0.0, image_size_mb(tag))
    if kind in KIND_BASE:
        ensure_bases([KIND_BASE[kind]])
    work = Path(tempfile.mkdtemp(prefix=f"simgym-ctx-{kind}-"))
    try:
        context = stage_context(
            kind, work / "context", requirements=requirements, context_args=context_args
        )
        for name, src in (extra_files or {}).items():
            shutil.copy2(src, context / name)
        return build(context, tag, build_args=build_args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sim_image() -> str:
    """The sim image (docker/sim.Dockerfile) the tests use for the CSTR sample: its tag.

    The CSTR sample needs nothing beyond simgym's base install, so no requirements; its code
    is mounted (or copied by a derived image) at /sim.
    """
    return _built("sim").tag


def train_image() -> str:
    """The training image (docker/train.Dockerfile on the Azure ML stand-in): its tag."""
    return _built("train").tag


_BUILT_IMAGES: dict[str, BuildResult] = {}


def _built(kind: str) -> BuildResult:
    if kind not in _BUILT_IMAGES:
        _BUILT_IMAGES[kind] = build_context_image(kind)
    return _BUILT_IMAGES[kind]


def built_images() -> dict[str, BuildResult]:
    """The images this process built (with their build times), by kind."""
    return dict(_BUILT_IMAGES)


# The CSTR sample as a sim author ships it (tests/test_sim_image.py): simgym's sim image with the
# sample's code and a CMD that names it, and the combined image `simgym submit --sim-image`
# builds FROM it.
CSTR_SIM_TAG = f"{TAG_PREFIX}/cstr-sim:latest"
CSTR_SIM_TRAIN_TAG = f"{TAG_PREFIX}/cstr-sim-train:latest"


def cstr_sim_image() -> BuildResult:
    """The CSTR sample in its own image: FROM the sim image, its code at /sim, CMD naming it."""
    if CSTR_SIM_TAG not in _BUILT_IMAGES:
        work = Path(tempfile.mkdtemp(prefix="simgym-ctx-cstr-"))
        try:
            shutil.copy2(ROOT / "examples" / "cstr" / "sim.py", work / "sim.py")
            (work / "Dockerfile").write_text(
                f'FROM {sim_image()}\nCOPY sim.py /sim/sim.py\nCMD ["sim.py:CSTR"]\n'
            )
            _BUILT_IMAGES[CSTR_SIM_TAG] = build(work, CSTR_SIM_TAG)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _BUILT_IMAGES[CSTR_SIM_TAG]


def cstr_sim_train_image() -> BuildResult:
    """The combined image of ``simgym submit --sim-image`` for the CSTR sample's image."""
    if CSTR_SIM_TRAIN_TAG not in _BUILT_IMAGES:
        sim = cstr_sim_image().tag
        _BUILT_IMAGES[CSTR_SIM_TRAIN_TAG] = build_context_image(
            "sim-train", CSTR_SIM_TRAIN_TAG, context_args=["--sim-image", sim]
        )
    return _BUILT_IMAGES[CSTR_SIM_TRAIN_TAG]


def build_all(log=print) -> dict[str, BuildResult]:
    """Every image the docker tests use, the two long installs side by side.

    The training image and the combined image each spend minutes in one pip process that
    mostly uses one core; built one after the other they were ~10 of the slow suite's
    minutes on a fresh 2-core machine. Later ``build`` calls for the same contexts are
    Docker cache hits.
    """
    from concurrent.futures import ThreadPoolExecutor

    start = time.monotonic()
    ensure_bases()
    pip_build_args()  # one file server for both builds (its port is in the cache key)
    with ThreadPoolExecutor(2) as pool:
        train = pool.submit(_built, "train")
        chain = pool.submit(cstr_sim_train_image)
        train.result(), chain.result()
    log(f"dockerkit: all images in {time.monotonic() - start:.0f} s")
    return built_images()


# ----------------------------------------------------------------------------- run


@contextlib.contextmanager
def network(name: str | None = None) -> Iterator[str]:
    """A user-defined bridge network for one test; removed with any container left on it."""
    name = name or f"simgym-test-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    docker("network", "create", "--driver", "bridge", "--label", LABEL, name)
    try:
        yield name
    finally:
        ids = docker("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("network", "rm", name, check=False)


@dataclass
class Container:
    """A container started by ``run``."""

    name: str
    network: str | None

    def ip(self) -> str:
        """Its address on its network."""
        fmt = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
        return docker("inspect", "--format", fmt, self.name).stdout.strip()

    def logs(self) -> str:
        """stdout and stderr so far."""
        proc = docker("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def state(self) -> dict:
        """``docker inspect``'s State (Running, ExitCode, ...)."""
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)

    def wait(self, timeout: float = 600.0) -> int:
        """Wait until it exits; its exit code."""
        return int(docker("wait", self.name, timeout=timeout).stdout.strip())

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker exec`` in it."""
        return docker("exec", self.name, *args, check=check)

    def kill(self) -> None:
        """SIGKILL its processes (``docker kill``)."""
        docker("kill", self.name)

    def start(self) -> None:
        """Start it again (same name, same network)."""
        docker("start", self.name)


@contextlib.contextmanager
def run(
    image: str,
    *args: str,
    network: str | None = None,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    volumes: Mapping[str, str] | None = None,
    entrypoint: str | None = None,
    options: Sequence[str] = (),
) -> Iterator[Container]:
    """``docker run -d`` IMAGE ARGS; the container is removed on exit (``docker rm -f``).

    ``volumes`` maps host paths to container paths (``:ro`` may end the container path);
    no ports are published: reach it by name or address on ``network``.
    """
    name = name or f"simgym-test-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    cmd = ["run", "-d", "--name", name, "--label", LABEL, "--init"]
    if network:
        cmd += ["--network", network, "--network-alias", name]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    for host, inside in (volumes or {}).items():
        cmd += ["-v", f"{host}:{inside}"]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    docker(*cmd, *options, image, *args)
    try:
        yield Container(name, network)
    finally:
        docker("rm", "-f", name, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.dockerkit bases|build KIND``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    reason = docker_available()
    if reason:
        print(f"dockerkit: {reason}", file=sys.stderr)
        return 2
    if argv[:1] == ["bases"]:
        start = time.monotonic()
        for tag, image_id in ensure_bases().items():
            print(f"{tag}  {image_id[:19]}  {image_size_mb(tag):.0f} MB")
        print(f"dockerkit: bases ready in {time.monotonic() - start:.0f} s")
        return 0
    if argv[:2] == ["build", "all"] and set(argv[2:]) <= {"--low-priority"}:
        if "--low-priority" in argv:
            BUILD_OPTIONS[:] = ["--cpu-shares", "2"]
            os.nice(19)  # debootstrap (the stand-ins) runs on the host: niced with us
        build_all()
        return 0
    if argv[:1] == ["build"] and len(argv) == 2 and argv[1] in KIND_BASE:
        build_context_image(argv[1])
        return 0
    print(
        "usage: python -m tests.dockerkit bases | build sim|train | build all [--low-priority]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
