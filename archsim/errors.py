"""The exception types archsim raises for problems the user can fix."""

from contextlib import contextmanager
from typing import Iterator


class ArchsimError(Exception):
    """Bad input or state that the user can fix.

    The message is one line that names the problem and the fix; the CLI prints it
    without a traceback and exits non-zero.
    """


class ParameterError(ArchsimError):
    """A bad value of one parameter, named as Python calls it (``eps_s``); the CLI names its flag (``--eps-s``).

    Parameters
    ----------
    parameter : str
        The parameter's Python name.
    problem : str
        What is wrong and the fix. It follows the parameter's name (``"must be positive, got -1"``), or holds ``{}``
        where the name goes (``"cannot make {} runs/x (permission denied)"``).
    """

    def __init__(self, parameter: str, problem: str) -> None:
        self.parameter, self.problem = parameter, problem
        super().__init__(self.naming(parameter))

    def naming(self, name: str) -> str:
        """The message with the parameter called ``name`` (a flag, on the command line)."""
        return self.problem.replace("{}", name) if "{}" in self.problem else f"{name} {self.problem}"


@contextmanager
def parameter_called(inner: str, outer: str) -> Iterator[None]:
    """Inside: a :class:`ParameterError` about a callee's parameter ``inner`` names it as the caller's ``outer``
    (``checks_on_run(checkpoints_of=...)`` passes it on as ``checkpoint_sat(model=...)``)."""
    try:
        yield
    except ParameterError as error:
        if error.parameter != inner:
            raise
        raise ParameterError(outer, error.problem) from error


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (or the type alone): a foreign exception, as one line of a message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
