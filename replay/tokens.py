"""Session tokens: an HMAC over the session id, so that a client cannot take over another session.

A token is ``base64url(HMAC-SHA256(secret, sid))`` without padding (43 characters).  The proxy checks
it on the first frame of every connection that names a session (``listeners[].session_secret``);
whoever hands session ids to clients signs them with the same secret: the proxy for the ids it
creates (it passes the token to the backend in ``attach``; the demo backend returns it from
``hello``), or a backend that issues its own ids (``replay.tokens.sign``).  Comparison is constant
time.  Tokens do not expire: rotate the secret to revoke them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["sign", "verify"]


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, sid: str) -> str:
    """The token of ``sid`` under ``secret``."""
    mac = hmac.new(_key(secret), sid.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(secret: str | bytes, sid: str, token: object) -> bool:
    """True if ``token`` is ``sid``'s token under ``secret`` (anything that is not a str is not)."""
    if isinstance(token, bytes):
        try:
            token = token.decode()
        except UnicodeDecodeError:
            return False
    if not isinstance(token, str) or len(token) > 128:
        return False
    return hmac.compare_digest(sign(secret, sid), token)
