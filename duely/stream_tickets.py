"""Stream tickets: how a browser's EventSource, which cannot send an Authorization header,
authenticates an event stream (`?ticket=`, docs/api.md "Server-Sent Events").

A ticket is derived from the caller's bearer token: it names the token (by its keyed hash, the
key of `auth_tokens`), carries an expiry, and is signed with SECRET_KEY. Nothing is stored.
It expires after STREAM_TICKET_TTL or with its token, whichever comes first, and it is only as
good as its token: every read of a stream checks the token is still known, unexpired and not
revoked, in the read statement itself (duely/eventlog/store.py). It is reusable until then,
because EventSource reconnects with the same URL. The raw token never appears in a URL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from duely import errors
from duely.auth import bad_token
from duely.clock import utcnow
from duely.models import AuthToken

_PURPOSE = b"duely-stream-ticket-v1"
_SIG_CHARS = 32  # hex characters of the signature kept (128 bits)


def _sign(secret_key: str, expires: int, token_hash: str) -> str:
    message = b"%s|%d|%s" % (_PURPOSE, expires, token_hash.encode())
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()[:_SIG_CHARS]


def issue(session: Session, token_hash: str, secret_key: str, ttl_secs: float) -> tuple[str, dt.datetime]:
    """A ticket for the token with this hash; returns (ticket, expires_at). Unauthorized when the
    token is not valid now."""
    token_expires = session.execute(
        select(AuthToken.expires_at).where(AuthToken.token_hash == token_hash, AuthToken.revoked_at.is_(None),
                                           AuthToken.expires_at > utcnow())
    ).scalar_one_or_none()
    if token_expires is None:
        raise bad_token()
    expires_at = min(utcnow() + dt.timedelta(seconds=ttl_secs), token_expires).replace(microsecond=0)
    expires = int(expires_at.timestamp())
    return f"{expires}.{token_hash}.{_sign(secret_key, expires, token_hash)}", expires_at


def token_hash_of(ticket: str, secret_key: str) -> str:
    """The hash of the token a ticket was derived from; Unauthorized when the ticket is malformed,
    forged or expired. (Whether the token is still valid is checked where it is used.)"""
    expires_text, _, rest = ticket.partition(".")
    token_hash, _, signature = rest.partition(".")
    if not (expires_text.isdigit() and token_hash and signature and len(expires_text) < 20):
        raise errors.Unauthorized("The stream ticket is not valid.")
    expires = int(expires_text)
    if not hmac.compare_digest(signature, _sign(secret_key, expires, token_hash)):
        raise errors.Unauthorized("The stream ticket is not valid.")
    if expires <= utcnow().timestamp():
        raise errors.Unauthorized("The stream ticket has expired; get a new one from POST /api/stream-tickets.")
    return token_hash

