"""The one exception type archsim raises for problems the user can fix."""


class ArchsimError(Exception):
    """Bad input or state that the user can fix.

    The message is one line that names the problem and the fix; the CLI prints it
    without a traceback and exits non-zero.
    """
