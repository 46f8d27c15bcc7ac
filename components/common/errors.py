"""The one error type that aprflow's CLIs turn into a single clear line instead of a traceback."""


class AprflowError(Exception):
    """A user-facing error: what went wrong and how to fix it, in one line.

    Raised for bad configuration, unreachable services and bad input. Programming errors stay
    ordinary exceptions so that their tracebacks are kept.
    """
