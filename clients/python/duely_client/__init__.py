"""duely_client: a small Python client for Duely's public API (needs only `requests`).

    from duely_client import Client
    client = Client("http://127.0.0.1:5001")
    client.register("alice", "correct horse")   # or client.login(...)
    client.join_queue()
    for event in client.updates():             # long polls, reconnects, resumes where it was
        ...
    for event in client.stream():              # the same over Server-Sent Events (one connection)
        ...
    client.create_challenge("bob")             # or None: an open challenge; accept_challenge(id)
    for event in client.duel_updates(duel_id): # a spectator's view of any duel, to duel_finished
        ...
"""

from duely_client.client import Client, EventStream, Updates
from duely_client.errors import (
    AlreadyInDuel,
    Blocked,
    CannotAcceptOwn,
    CannotBlockSelf,
    CannotChallengeSelf,
    CannotDeclineOpen,
    ChallengeClosed,
    ChallengesDisabled,
    Conflict,
    ConnectionFailed,
    DuelActive,
    DuelFinished,
    DuelyError,
    EventsExpired,
    Forbidden,
    NicknameTaken,
    NotFound,
    OpponentBusy,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationError,
)

__all__ = [
    "AlreadyInDuel", "Blocked", "CannotAcceptOwn", "CannotBlockSelf", "CannotChallengeSelf", "CannotDeclineOpen",
    "ChallengeClosed", "ChallengesDisabled", "Client", "Conflict", "ConnectionFailed", "DuelActive", "DuelFinished",
    "DuelyError", "EventStream", "EventsExpired", "Forbidden", "NicknameTaken", "NotFound", "OpponentBusy", "RateLimited",
    "ServerError", "Unauthorized", "Unavailable", "Updates", "ValidationError",
]
