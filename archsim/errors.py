"""The one exception type archsim raises for problems the user can fix."""


class ArchsimError(Exception):
    """Bad input or state that the user can fix.

    The message is one line that names the problem and the fix; the CLI prints it
    without a traceback and exits non-zero.
    """


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (or the type alone): a foreign exception, as one line of a message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
