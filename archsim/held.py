"""Objects handed to archsim in Python (modules, attacks), held in this process under the keys their specs name.

A spec is a string that any process can read; an object is not. A module given to
:func:`archsim.runs.run_sat` is therefore held here under its content fingerprint,
and its spec (``object:NAME,fingerprint=KEY``) names that key. The stages build the
model from the spec as they build any other; an engine that runs tasks in other
processes ships the held objects a task's specs name (:func:`referenced`) with it.
"""

from __future__ import annotations

from typing import Any, Iterable

_HELD: dict[str, Any] = {}


def hold(key: str, value: Any) -> None:
    """Keep ``value`` under ``key`` for the life of the process (or until held again)."""
    _HELD[key] = value


def release(key: str) -> None:
    """Stop holding the object under ``key`` (if any)."""
    _HELD.pop(key, None)


def held(key: str) -> Any | None:
    """The object held under ``key``, or None."""
    return _HELD.get(key)


def referenced(values: Iterable[Any]) -> dict[str, Any]:
    """The held objects whose keys occur in the strings among ``values`` (searched through tuples, lists and
    dicts): what a task in another process needs to build the models its specs name."""
    found: dict[str, Any] = {}

    def visit(value: Any) -> None:
        if isinstance(value, str):
            found.update((key, obj) for key, obj in _HELD.items() if key in value)
        elif isinstance(value, (tuple, list)):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    for value in values:
        visit(value)
    return found
