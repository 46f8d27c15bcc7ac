"""Secrets never leave a URI: what aprflow prints, logs, stores or reports goes through
:func:`redact_uri` first, and a URI that must not hold a secret is checked with
:func:`carries_credentials`.

A secret hides in two places of a URI: its userinfo (``http://user:PASSWORD@host``,
``https://TOKEN@host``) and its query string (a presigned S3 URL's ``X-Amz-Signature`` and
``X-Amz-Credential``, an Azure SAS ``sig``, ``?token=``). Both are found in free text too, so
an error message that quotes a URI (botocore's ``Could not connect to the endpoint URL:
"http://user:pw@host/bucket"``) is redacted whole.
"""

from __future__ import annotations

import re

REDACTED = "***"

# scheme://USERINFO@, where USERINFO is "user:password" or a lone token. A password may hold a
# raw "/" (a 40-character AWS secret key does about every other time), so it runs to the last
# "@" before whitespace, a quote or a query; "host:5000/" is a port, not a password. A URI
# with both a password and an "@" in its path loses its host too: hiding more, never less.
# The scheme and a password with a "/" are bounded (32 and 128 characters) so that a long text
# costs no quadratic scan; a longer password without a "/" is taken whole as a token, one
# with a "/" is not found (an AWS secret access key has 40).
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)"
    r"(?:(?P<user>[^\s/?#'\"<>:@]*):(?!\d*(?:[/?#\s'\"<>]|$))[^\s?#'\"<>]{0,128}|[^\s/?#'\"<>]*)@"
)
# Query parameters whose value is a secret: tokens, passwords, API keys and the signature and
# credential of presigned S3 (X-Amz-*, AWSAccessKeyId/Signature) and Azure SAS (sig) URLs.
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[\w.-]*token|[\w.-]*password|passwd|pwd|[\w.-]*secret|sig|signature|"
    r"x-amz-signature|x-amz-credential|awsaccesskeyid|[\w.-]*api[_-]?key|key|auth|"
    r"credentials?)=)(?P<value>[^&#\s'\"<>]+)",
    re.IGNORECASE,
)


def _redact_userinfo(match: re.Match[str]) -> str:
    # With a password the user name stays (it says which account); alone it may be a token.
    user = "" if match["user"] is None else f"{match['user']}:"
    return f"{match['scheme']}{user}{REDACTED}@"


def redact_uri(text: str) -> str:
    """``text`` (a URI, or any text holding URIs) with every secret replaced by ``***``.

    ``scheme://user:password@`` becomes ``scheme://user:***@``, ``scheme://token@`` becomes
    ``scheme://***@``, and the value of a secret query parameter (``token``, ``sig``,
    ``X-Amz-Signature``, ``X-Amz-Credential``, ...) becomes ``***``::

        redact_uri("error at http://u:pw@host:5000/x?token=abc&n=1")
        # 'error at http://u:***@host:5000/x?token=***&n=1'
    """
    text = _USERINFO.sub(_redact_userinfo, text)
    return _SECRET_QUERY.sub(lambda match: f"{match['key']}{REDACTED}", text)


def carries_credentials(uri: str) -> bool:
    """True if ``uri`` holds userinfo (``user:password@``, ``token@``) or a secret query
    parameter: something :func:`redact_uri` would hide."""
    return bool(_USERINFO.search(uri) or _SECRET_QUERY.search(uri))
