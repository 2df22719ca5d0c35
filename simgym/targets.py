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
        return _import_module(module_name, origin=str(path))
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
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise LoadError(f"importing {path} raised {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(name: str, origin: str | None = None) -> Any:
    _ensure_on_path(Path.cwd().resolve())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        where = origin or name
        raise LoadError(
            f"importing {where} failed: {exc} (run simserver from the folder "
            "your sim's imports are relative to, or use --chdir)"
        ) from exc
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
