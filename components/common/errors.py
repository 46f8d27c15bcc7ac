"""The one error type that aprflow's CLIs turn into a single clear line instead of a traceback."""

from components.common.uris import redact_uri


class AprflowError(Exception):
    """A user-facing error: what went wrong and how to fix it, in one line.

    Raised for bad configuration, unreachable services and bad input. Programming errors stay
    ordinary exceptions so that their tracebacks are kept.
    """

    def __str__(self) -> str:
        # Messages name URIs (endpoints, tracking servers, weights): whatever carries a
        # password or token shows it as ``***`` wherever the message goes (terminal, stored
        # failure reasons, MLflow tags).
        return redact_uri(super().__str__())
