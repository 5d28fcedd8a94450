"""The pure rules of challenges (duely/challenges.py): who may challenge or accept, in which order
the refusals apply, and what Retry-After a rate limit gives."""

from __future__ import annotations

import dataclasses

from duely import errors
from duely.challenges import AcceptanceFacts, CreationFacts, Limits, acceptance_refusal, creation_refusal

LIMITS = Limits(max_pending=5, max_per_hour=20)
FREE = CreationFacts(challenger_id=1, to_user_id=2, challenger_in_duel=False, opponent_in_duel=False,
                     opponent_accepts_challenges=True, blocked=False, pending_out=0, secs_until_a_pending_expires=0,
                     created_in_window=0, secs_until_window_frees=0)


def refusal(**changes):
    found = creation_refusal(dataclasses.replace(FREE, **changes), LIMITS)
    return None if found is None else type(found)


def test_a_challenge_between_two_free_players_is_allowed():
    assert refusal() is None
    assert refusal(to_user_id=None) is None


def test_each_refusal_and_their_order():
    everything = {"challenger_in_duel": True, "opponent_in_duel": True, "opponent_accepts_challenges": False,
                  "blocked": True, "pending_out": 5, "created_in_window": 20}
    assert refusal(to_user_id=1, **everything) is errors.CannotChallengeSelf
    assert refusal(**everything) is errors.RateLimited
    assert refusal(**{**everything, "pending_out": 4}) is errors.RateLimited
    assert refusal(**{**everything, "pending_out": 4, "created_in_window": 19}) is errors.AlreadyInDuel
    rest = {k: v for k, v in everything.items() if k not in ("pending_out", "created_in_window", "challenger_in_duel")}
    assert refusal(**rest) is errors.Blocked
    assert refusal(**{**rest, "blocked": False}) is errors.ChallengesDisabled
    assert refusal(opponent_in_duel=True) is errors.OpponentBusy


def test_an_open_challenge_has_no_opponent_to_check():
    assert refusal(to_user_id=None, opponent_in_duel=True, opponent_accepts_challenges=False, blocked=True) is None
    assert refusal(to_user_id=None, challenger_in_duel=True) is errors.AlreadyInDuel


def test_rate_limits_say_when_to_come_back():
    pending = creation_refusal(dataclasses.replace(FREE, pending_out=5, secs_until_a_pending_expires=42.2), LIMITS)
    assert isinstance(pending, errors.RateLimited) and pending.retry_after == 43 and pending.headers == {"Retry-After": "43"}
    hourly = creation_refusal(dataclasses.replace(FREE, created_in_window=20, secs_until_window_frees=0.0), LIMITS)
    assert isinstance(hourly, errors.RateLimited) and hourly.retry_after == 1  # never 0


def test_acceptance_refusals_and_their_order():
    ok = AcceptanceFacts(challenger_id=1, accepter_id=2, pending=True, blocked=False,
                         accepter_in_duel=False, challenger_in_duel=False)

    def why(**changes):
        found = acceptance_refusal(dataclasses.replace(ok, **changes))
        return None if found is None else type(found)

    assert why() is None
    bad = {"pending": False, "blocked": True, "accepter_in_duel": True, "challenger_in_duel": True}
    assert why(accepter_id=1, **bad) is errors.CannotAcceptOwn
    assert why(**bad) is errors.ChallengeClosed
    assert why(**{**bad, "pending": True}) is errors.Blocked
    assert why(accepter_in_duel=True, challenger_in_duel=True) is errors.AlreadyInDuel
    assert why(challenger_in_duel=True) is errors.OpponentBusy
