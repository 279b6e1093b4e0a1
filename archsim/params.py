"""The rules of archsim's parameters, each written once: the library checks values by them (:func:`check`, raising
:class:`~archsim.errors.ParameterError` that names the Python parameter) and the CLI builds its option types from
them (naming the flag), as scikit-learn's parameter constraints serve both its estimators and their checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from archsim.errors import ParameterError

AUTO = "auto"
"""The value of a count that archsim chooses itself (``--batch-size auto``: the fastest batch measured per model)."""

MAX_SEED = 2**32 - 1
"""numpy's and scikit-learn's seeds run from 0 to 2^32 - 1."""


@dataclass(frozen=True)
class Rule:
    """What one parameter accepts: whole numbers (``kind=int``) from ``low`` to ``high``, numbers (``float``) above
    ``above``, or one of ``choices``; ``auto`` also admits ``"auto"``, ``optional`` also None."""

    kind: type
    low: int | None = None
    high: int | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()
    auto: bool = False
    optional: bool = False

    def describe(self) -> str:
        """The accepted values in words, as every message says them."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is int:
            text = (
                f"a whole number from {self.low} to {self.high}"
                if self.high is not None
                else "a positive whole number"
                if self.low == 1
                else f"a whole number of {self.low} or more"
                if self.low is not None
                else "a whole number"
            )
        else:
            text = f"a number above {self.above:g}" if self.above is not None else "a number"
        return text + (" or 'auto'" if self.auto else "")

    def convert(self, value: Any) -> Any:
        """``value`` as the parameter takes it (a digit string as an int, a whole float as it is), or ValueError."""
        if value is None and self.optional:
            return None
        if self.auto and value == AUTO:
            return AUTO
        if self.choices:
            if value not in self.choices:
                raise ValueError(value)
            return value
        if isinstance(value, bool):
            raise ValueError(value)
        if self.kind is int:
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            if not isinstance(value, (int, np.integer)):
                raise ValueError(value)
            value = int(value)
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ValueError(value)
            return value
        value = float(value)
        if not math.isfinite(value) or (self.above is not None and not value > self.above):
            raise ValueError(value)
        return value

    def check(self, parameter: str, value: Any) -> Any:
        """:meth:`convert`, with a one-line :class:`ParameterError` naming ``parameter`` for a value it refuses."""
        try:
            return self.convert(value)
        except (TypeError, ValueError):
            raise ParameterError(parameter, f"must be {self.describe()}, got {value!r}") from None


COUNT_OR_AUTO = Rule(int, low=1, auto=True)

RULES: dict[str, Rule] = {
    "seed": Rule(int, low=0, high=MAX_SEED),
    "n_boot": Rule(int, low=0),
    "attack_seeds": Rule(int, low=1),
    "eps_s": Rule(float, above=0),
    "batch_size": COUNT_OR_AUTO,
    "max_resident": COUNT_OR_AUTO,
    "precision": Rule(str, choices=("auto", "fp32", "bf16")),
    "views": Rule(str, choices=("own", "shared")),
    "n_images": Rule(int, low=1, optional=True),
    "random_sets": Rule(int, low=1),
    "draws": Rule(int, low=1),
    "epochs": Rule(int, low=1, optional=True),
    "images": Rule(str, choices=("eval", "sat")),
}
"""Each parameter's rule, by its Python name; the CLI's option of that name takes the same values."""


def check(parameter: str, value: Any) -> Any:
    """``value`` checked (and converted) by the rule of ``parameter`` in :data:`RULES`."""
    return RULES[parameter].check(parameter, value)
