"""The parameter rules: each value they accept and refuse, their words, and the CLI's options built from them."""

import click
import numpy as np
import pytest

from archsim.cli import CountOrAuto, cli
from archsim.errors import ParameterError
from archsim.params import AUTO, MAX_SEED, RULES, Rule, check


@pytest.mark.parametrize(
    ("parameter", "good", "bad", "words"),
    [
        ("seed", [0, MAX_SEED, np.int64(7), "12"], [-1, MAX_SEED + 1, 1.0, True, None, "x"], "a whole number from 0"),
        ("n_boot", [0, 1000], [-1, 2.5, False], "a whole number of 0 or more"),
        ("attack_seeds", [1, 3], [0, -2, "two"], "a positive whole number"),
        ("batch_size", [AUTO, 1, "64"], [0, "most", 1.5, None, True], "a positive whole number or 'auto'"),
        ("eps_s", [1e-9, 1, 2.5], [0, -1, float("nan"), float("inf"), "x", None], "a number above 0"),
        ("views", ["own", "shared"], ["mine", None, 1], "one of own, shared"),
        ("epochs", [None, 1], [0, 1.5], "a positive whole number"),
    ],
)
def test_each_rule_accepts_and_refuses_in_one_message_style(parameter, good, bad, words):
    for value in good:
        expected = int(value) if isinstance(value, (str, np.integer)) and str(value).isdigit() else value
        expected = float(expected) if RULES[parameter].kind is float else expected
        assert check(parameter, value) == expected and type(check(parameter, value)) is type(expected)
    for value in bad:
        with pytest.raises(ParameterError, match=rf"^{parameter} must be {words}.*, got {value!r}$") as raised:
            check(parameter, value)
        assert raised.value.parameter == parameter


def test_rule_words():
    assert Rule(int, low=2).describe() == "a whole number of 2 or more"
    assert Rule(int).describe() == "a whole number"
    assert Rule(float).describe() == "a number"
    assert Rule(int, low=1, high=9, auto=True).describe() == "a whole number from 1 to 9 or 'auto'"


# Options named as a ruled parameter that take something else.
OTHER_MEANING = {("checks", "epochs"): "a list of checkpoint epochs, not a number of training epochs"}


def _options():
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.name in RULES and (name, param.name) not in OTHER_MEANING:
                yield name, param


def test_every_cli_option_of_a_ruled_parameter_takes_what_the_rule_takes():
    seen = set()
    for command, param in _options():
        rule, kind = RULES[param.name], param.type
        seen.add(param.name)
        where = f"{command} {param.opts}"
        if rule.choices:
            assert isinstance(kind, click.Choice) and tuple(kind.choices) == rule.choices, where
        elif rule.auto:
            assert isinstance(kind, CountOrAuto) and kind.rule == rule, where
        elif rule.kind is int:
            assert isinstance(kind, click.IntRange) and (kind.min, kind.max) == (rule.low, rule.high), where
        else:
            assert isinstance(kind, click.FloatRange) and kind.min == rule.above and kind.min_open, where
    # every rule the CLI has an option for is checked above, not only some
    assert {"seed", "n_boot", "attack_seeds", "batch_size", "max_resident", "eps_s", "precision", "views"} <= seen
