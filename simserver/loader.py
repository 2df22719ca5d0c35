"""Find a simulator from a target string and describe it as a ``SimFactory``.

Target forms:

* ``path/to/file.py:Class`` or ``package.module:Class`` — a class, found by
  ``simgym.targets.resolve_class`` (a reference-style sim folder whose modules import each
  other as ``from sim.x import Y`` works unedited when the server runs from that folder).
* ``gymnasium:Pendulum-v1`` (or ``gym:...``) — a registered Gymnasium env id.

Classes that subclass ``gymnasium.Env`` are hosted as Gymnasium envs; any other
class with ``reset``/``step`` as a reference-style or plain simulator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simgym.targets import LoadError, resolve_class
from simserver.adapters import SimFactory, class_factory, gym_factory

_GYM_PREFIXES = ("gymnasium:", "gym:")


def load_factory(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    action_names: Sequence[str] = (),
) -> SimFactory:
    """Build the ``SimFactory`` for a target string.

    Args:
        target: See the module docstring.
        kwargs: Constructor (or ``gymnasium.make``) keyword arguments.
        action_names: Action names for sims that take an action dict without
            declaring its keys.

    Raises:
        LoadError: With a message that says what to fix.
    """
    kwargs = dict(kwargs or {})
    for prefix in _GYM_PREFIXES:
        if target.startswith(prefix):
            env_id = target[len(prefix) :]
            import gymnasium

            def make(env_id: str = env_id) -> Any:
                return gymnasium.make(env_id, **kwargs)

            try:
                gymnasium.spec(env_id)
            except Exception as exc:
                raise LoadError(f"unknown Gymnasium env id {env_id!r}: {exc}") from exc
            return gym_factory(make, env_id)
    obj = resolve_class(target)
    if not isinstance(obj, type):
        raise LoadError(f"{target} is a {type(obj).__name__}, not a class")
    try:
        import gymnasium

        is_env = issubclass(obj, gymnasium.Env)
    except ImportError:  # pragma: no cover - gymnasium is a base dependency
        is_env = False
    if is_env:
        return gym_factory(lambda: obj(**kwargs), obj.__name__)
    return class_factory(obj, kwargs, action_names=action_names)
