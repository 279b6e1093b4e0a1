"""Plugins: model schemes, attacks and measures other packages add through entry points.

A distribution declares them in its metadata, e.g. in ``pyproject.toml``::

    [project.entry-points."archsim.attacks"]
    jitter-pgd = "mypkg.attacks:JitterPGD"

Groups: :data:`SOURCES` (a function ``(spec, cache) -> SimModel`` for ``NAME:...``
model specs), :data:`ATTACKS` (an :class:`archsim.attacks.Attack` subclass) and
:data:`MEASURES` (a :class:`archsim.applications.measures.Measure`-shaped object).
The names are read from the metadata without importing anything; a plugin is
imported when first used. One that fails to import is named in a one-line warning
and left out; it never breaks the commands that do not need it.
"""

from __future__ import annotations

import functools
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from archsim.errors import one_line

SOURCES = "archsim.sources"
ATTACKS = "archsim.attacks"
MEASURES = "archsim.measures"


class PluginWarning(UserWarning):
    """A plugin could not be loaded and is left out."""


@functools.cache
def _entry_points(group: str) -> tuple[EntryPoint, ...]:
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, point)  # the first distribution on the path wins, as for imports
    return tuple(found.values())


def plugin_names(group: str) -> tuple[str, ...]:
    """The names the installed distributions declare in ``group``, without importing them."""
    return tuple(point.name for point in _entry_points(group))


@functools.cache
def load_plugins(group: str) -> dict[str, Any]:
    """The objects of ``group``'s entry points, by name; those that fail to import are warned about and left out."""
    loaded: dict[str, Any] = {}
    for point in _entry_points(group):
        try:
            loaded[point.name] = point.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin of any kind must not break archsim
            origin = f" from {point.dist.name}" if point.dist is not None else ""
            warnings.warn(
                f"archsim plugin {point.name!r} ({point.value}{origin}) failed to load ({one_line(error)}); it is left "
                "out",
                PluginWarning,
                stacklevel=2,
            )
    return loaded


def forget_plugins() -> None:
    """Read the entry points anew (after a distribution was installed or put on the path in this process)."""
    _entry_points.cache_clear()
    load_plugins.cache_clear()
