"""Find a simulator from a target string and describe it as a ``SimFactory``.

Target forms:

* ``path/to/file.py:Class`` or ``package.module:Class`` — a class, found by
  ``simgym.targets.resolve_class`` (a reference-style sim folder whose modules import each
  other as ``from sim.x import Y`` works unedited when the server runs from that folder).
* ``gymnasium:Pendulum-v1`` (or ``gym:...``) — a registered Gymnasium env id.

Classes that subclass ``gymnasium.Env`` are hosted as Gymnasium envs; any other class in
whatever shape ``simserver.shapes`` finds it (reference ``SimulatorModel``, plain class,
Bonsai session class, a class rebuilt per episode).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from simgym.targets import LoadError, resolve_class
from simserver.adapters import (
    ClassSim,
    GymSim,
    SimFactory,
    SimInstance,
    SimRecipe,
    class_factory,
    gym_factory,
    rebuilder,
)
from simserver.shapes import ShapeChoice, find_shape, parse_choice

_GYM_PREFIXES = ("gymnasium:", "gym:")
log = logging.getLogger("simserver")


def load_factory(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    action_names: Sequence[str] = (),
    shape: ShapeChoice | str | None = None,
) -> SimFactory:
    """Build the ``SimFactory`` for a target string.

    Args:
        target: See the module docstring.
        kwargs: Constructor (or ``gymnasium.make``) keyword arguments.
        action_names: Action names for sims that take an action dict without
            declaring its keys.
        shape: What the user picked where a class's shape cannot be detected
            (``simserver.shapes.ShapeChoice``, or its text ``"reset=constructor,step=scalar"``).

    Raises:
        LoadError: With a message that says what to fix.
    """
    choice = parse_choice(shape) if isinstance(shape, str) else shape
    factory, module = _load(target, dict(kwargs or {}), action_names, choice)
    if factory.shape is not None:
        log.debug("%s: %s", factory.sim_name, factory.shape.describe())  # --log-level debug
    recipe = SimRecipe(
        target,
        dict(kwargs or {}),
        os.getcwd(),
        tuple(v.name for v in factory.states),
        module,
        factory.shape,
    )
    return dataclasses.replace(factory, recipe=recipe)


def _load(
    target: str, kwargs: dict[str, Any], action_names: Sequence[str], choice: ShapeChoice | None
) -> tuple[SimFactory, str]:
    """The factory of ``load_factory`` and the module that defines the sim ("" for an env id)."""
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
            return gym_factory(make, env_id), ""
    obj = resolve_class(target)
    if not isinstance(obj, type):
        raise LoadError(f"{target} is a {type(obj).__name__}, not a class")
    try:
        import gymnasium

        is_env = issubclass(obj, gymnasium.Env)
    except ImportError:  # pragma: no cover - gymnasium is a base dependency
        is_env = False
    if is_env:
        return gym_factory(lambda: obj(**kwargs), obj.__name__), obj.__module__
    factory = class_factory(obj, kwargs, action_names=action_names, choice=choice)
    return factory, obj.__module__


def build_instance(recipe: SimRecipe, action_names: list[str]) -> SimInstance:
    """Build one instance from a recipe, as the factory's ``create`` would, without probing.

    Runs in a sim worker process (``simserver.isolation``), from the recipe's folder.

    Raises:
        LoadError: The target cannot be imported.
        Exception: Whatever the sim's constructor raises.
    """
    os.chdir(recipe.workdir)
    for prefix in _GYM_PREFIXES:
        if recipe.target.startswith(prefix):
            import gymnasium

            return GymSim(gymnasium.make(recipe.target[len(prefix) :], **recipe.kwargs))
    cls = resolve_class(recipe.target)
    import gymnasium

    if issubclass(cls, gymnasium.Env):
        return GymSim(cls(**recipe.kwargs))
    sim = cls(**recipe.kwargs)
    shape = recipe.shape or find_shape(cls, sim)
    rebuild = None if shape.start else rebuilder(cls, recipe.kwargs)
    return ClassSim(sim, list(recipe.states), action_names, shape, rebuild)
