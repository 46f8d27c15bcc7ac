"""The transfer component's user-facing error."""

from components.common.errors import AprflowError


class TransferError(AprflowError):
    """An unknown backbone or trial, unusable weights, or a bad evaluation request."""
