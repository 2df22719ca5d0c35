"""Targets: the object named by ``path/to/file.py:Name`` or ``package.module:Name``.

The server loads its sim class this way, the client a spec's reward function or
``RLSimSpec``, the launcher an evaluation baseline. A file below the working directory is
imported under its dotted name (``sim.simulator_model``), with the working directory on
``sys.path``, so a reference-style sim folder whose modules import each other as
``from sim.x import Y`` works unedited; a file elsewhere gets its own folder and that
folder's parent on ``sys.path``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any


class LoadError(Exception):
    """The simulator target cannot be imported, built or probed (a start-up error)."""


#: ``simserver --shape`` (and a spec's ``sim.shape``): how to drive a sim where it cannot be
#: detected (simserver/shapes.py). Here so that the client side checks a spec's choice too.
SHAPE_CHOICES = {
    "reset": ("method", "constructor"),
    "config": ("dict", "kwargs"),
    "step": ("dict", "scalar"),
}


def parse_shape(text: str) -> dict[str, str]:
    """``"reset=constructor,step=scalar"`` as ``{"reset": "constructor", "step": "scalar"}``.

    Raises:
        LoadError: An unknown key or value, naming what is accepted.
    """
    picked: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in SHAPE_CHOICES or value not in SHAPE_CHOICES[key]:
            accepted = "; ".join(f"{k}={'|'.join(v)}" for k, v in SHAPE_CHOICES.items())
            raise LoadError(f"--shape {item!r}: expected {accepted}")
        picked[key] = value
    return picked


#: What to install for a module whose distribution is named otherwise (or is an extra of ours).
_INSTALL = {
    "microsoft_bonsai_api": 'the Bonsai SDK: pip install "simgym[bonsai]" (microsoft-bonsai-api)',
    "dotenv": "python-dotenv: pip install python-dotenv",
    "yaml": "PyYAML: pip install pyyaml",
    "sklearn": "scikit-learn: pip install scikit-learn",
    "cv2": "OpenCV: pip install opencv-python",
    "PIL": "Pillow: pip install pillow",
}


def _on_disk(name: str, folders: list[Path]) -> bool:
    """Whether a module or package ``name`` sits in one of ``folders``: then it is the user's."""
    return any((f / f"{name}.py").is_file() or (f / name).is_dir() for f in folders)


def _missing(exc: ModuleNotFoundError, where: str, module: str, folder: Path | None) -> LoadError:
    """A missing module while importing the user's file, as one line that says what to do.

    A module of the user's own (the target's package, or one beside the file or in a folder
    above it) is a path problem: the server runs from the wrong folder. Any other is a
    package this Python lacks: name it and how to install it.
    """
    top = (exc.name or "").partition(".")[0]
    folders = [Path.cwd().resolve()]
    if folder is not None:
        folders += [folder, *folder.parents]
    if not top or top == module.partition(".")[0] or _on_disk(top, folders):
        return LoadError(
            f"importing {where} failed: {exc} (run simserver from the folder "
            "your sim's imports are relative to, or use --chdir)"
        )
    what = _INSTALL.get(top, f"the package that provides it (often: pip install {top})")
    return LoadError(
        f"importing {where} failed: {exc}, a package this Python ({sys.executable}) "
        f"does not have; install {what}"
    )


def _ensure_on_path(folder: Path) -> None:
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import_file(path: Path) -> Any:
    """Import a ``.py`` file, preferring its dotted name relative to the cwd."""
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    cwd = Path.cwd().resolve()
    path = path.resolve()
    _ensure_on_path(cwd)
    try:
        rel = path.relative_to(cwd)
    except ValueError:
        rel = None
    if rel is not None and all(part.isidentifier() for part in rel.with_suffix("").parts):
        module_name = ".".join(rel.with_suffix("").parts)
        return _import_module(module_name, origin=str(path), folder=path.parent)
    # Outside the cwd: make the file's folder and its parent importable so that
    # both `import sibling` and `from folder.sibling import x` styles resolve.
    _ensure_on_path(path.parent.parent)
    _ensure_on_path(path.parent)
    module_name = f"_simgym_target_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        sys.modules.pop(module_name, None)
        raise _missing(exc, str(path), module_name, path.parent) from exc
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise LoadError(f"importing {path} raised {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(name: str, origin: str | None = None, folder: Path | None = None) -> Any:
    _ensure_on_path(Path.cwd().resolve())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise _missing(exc, origin or name, name, folder) from exc
    except Exception as exc:
        raise LoadError(f"importing {origin or name} raised {type(exc).__name__}: {exc}") from exc


def resolve_class(target: str) -> Any:
    """Return the object named by ``module_or_file:Attr``.

    Raises:
        LoadError: The target is malformed, or the module or attribute is missing.
    """
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise LoadError(
            f"target {target!r} must look like path/to/file.py:Class, package.module:Class "
            "or gymnasium:EnvId"
        )
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _import_file(Path(module_part))
    else:
        module = _import_module(module_part)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            available = sorted(n for n in dir(module) if not n.startswith("_"))
            raise LoadError(
                f"{module_part} has no attribute {attr!r} (it defines: {', '.join(available[:20])})"
            ) from None
    return obj
