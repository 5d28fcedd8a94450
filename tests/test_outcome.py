"""The "who wins" rule (duely/outcome.py): first Accepted by submission time, once certain."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from duely.outcome import Decision, SubmissionView, decide

ALICE, BOB = 1, 2
START = dt.datetime(2026, 11, 22, 17, 0, tzinfo=dt.UTC)
DEADLINE = START + dt.timedelta(minutes=30)
DURING = START + dt.timedelta(minutes=10)
AFTER = DEADLINE + dt.timedelta(seconds=5)


def at(minutes: float) -> dt.datetime:
    return START + dt.timedelta(minutes=minutes)


def sub(user_id: int, minutes: float, verdict: str | None) -> SubmissionView:
    return SubmissionView(user_id=user_id, submitted_at=at(minutes), verdict=verdict)


def run(subs, now=DURING, resigned_by=None) -> Decision | None:
    return decide(subs, now=now, deadline=DEADLINE, player_ids=(ALICE, BOB), resigned_by=resigned_by)


def win(user_id: int, reason: str = "accepted") -> Decision:
    return Decision("win", user_id, reason)


def test_nothing_decided_while_no_one_has_solved_it():
    assert run([]) is None
    assert run([sub(ALICE, 1, "Wrong Answer on test #3"), sub(BOB, 2, None)]) is None


def test_first_accepted_wins_when_nothing_else_is_pending():
    assert run([sub(ALICE, 1, "Wrong Answer on test #1"), sub(BOB, 2, "Accepted")]) == win(BOB)


def test_later_accepted_judged_first_does_not_win_over_an_earlier_one_still_testing():
    subs = [sub(ALICE, 1, None), sub(BOB, 2, "Accepted")]
    assert run(subs) is None  # alice's may still be Accepted, and it came first
    assert run([sub(ALICE, 1, "Accepted"), sub(BOB, 2, "Accepted")]) == win(ALICE)


def test_later_accepted_wins_once_the_earlier_opponent_submission_is_rejected():
    assert run([sub(ALICE, 1, "Time Limit Exceeded on test #2"), sub(BOB, 2, "Accepted")]) == win(BOB)


def test_an_accepted_wins_without_waiting_for_the_opponents_later_submissions():
    assert run([sub(ALICE, 1, "Accepted"), sub(BOB, 2, None), sub(BOB, 3, None)]) == win(ALICE)


def test_the_winners_own_earlier_pending_submission_does_not_hold_the_result():
    assert run([sub(ALICE, 1, None), sub(ALICE, 2, "Accepted"), sub(BOB, 3, "Wrong Answer on test #1")]) == win(ALICE)


def test_every_earlier_opponent_submission_must_be_judged():
    subs = [sub(ALICE, 1, "Wrong Answer on test #1"), sub(ALICE, 2, None), sub(BOB, 3, "Accepted")]
    assert run(subs) is None
    subs[1] = sub(ALICE, 2, "Compilation Error")
    assert run(subs) == win(BOB)


def test_identical_submission_times_both_accepted_is_a_draw_by_accepted():
    assert run([sub(ALICE, 5, "Accepted"), sub(BOB, 5, "Accepted")]) == Decision("draw", None, "accepted")


def test_identical_submission_time_still_being_judged_blocks_the_win():
    assert run([sub(ALICE, 5, "Accepted"), sub(BOB, 5, None)]) is None
    assert run([sub(ALICE, 5, "Accepted"), sub(BOB, 5, "Wrong Answer on test #1")]) == win(ALICE)


def test_deadline_with_nothing_submitted_is_a_draw_by_timeout():
    assert run([], now=DEADLINE) == Decision("draw", None, "timeout")


def test_no_draw_before_the_deadline():
    assert run([sub(ALICE, 1, "Wrong Answer on test #1")], now=DEADLINE - dt.timedelta(microseconds=1)) is None


def test_deadline_draw_waits_for_submissions_made_before_it():
    pending = [sub(ALICE, 29.9, None), sub(BOB, 3, "Wrong Answer on test #1")]
    assert run(pending, now=AFTER) is None
    judged = [sub(ALICE, 29.9, "Wrong Answer on test #7"), sub(BOB, 3, "Wrong Answer on test #1")]
    assert run(judged, now=AFTER) == Decision("draw", None, "timeout")


def test_accepted_submitted_before_the_deadline_but_judged_after_it_still_wins():
    assert run([sub(BOB, 29.9, None)], now=AFTER) is None
    assert run([sub(BOB, 29.9, "Accepted")], now=AFTER) == win(BOB)


def test_submissions_at_or_after_the_deadline_are_ignored():
    late = [sub(ALICE, 30, "Accepted"), sub(BOB, 31, None)]
    assert run(late, now=AFTER) == Decision("draw", None, "timeout")
    # ... and an unjudged late one does not hold up an Accepted made in time either
    assert run([sub(ALICE, 20, "Accepted"), sub(BOB, 30, None)], now=AFTER) == win(ALICE)


def test_resign_gives_the_opponent_the_win_at_once():
    assert run([], resigned_by=ALICE) == win(BOB, "resign")
    assert run([sub(BOB, 1, None), sub(ALICE, 2, None)], resigned_by=BOB) == win(ALICE, "resign")


def test_resign_while_an_accepted_waits_for_the_resigners_earlier_submission():
    # bob's Accepted is held up only by alice's pending one; alice gives up: bob wins by resign
    assert run([sub(ALICE, 1, None), sub(BOB, 2, "Accepted")], resigned_by=ALICE) == win(BOB, "resign")


def test_a_result_already_certain_stands_against_a_resign():
    assert run([sub(ALICE, 1, "Accepted")], resigned_by=ALICE) == win(ALICE)
    assert run([], now=AFTER, resigned_by=BOB) == Decision("draw", None, "timeout")


def test_resign_after_the_deadline_while_submissions_are_judged():
    assert run([sub(ALICE, 29, None)], now=AFTER, resigned_by=ALICE) == win(BOB, "resign")


def test_input_order_does_not_matter():
    subs = [sub(ALICE, 1, "Wrong Answer on test #1"), sub(BOB, 2, None), sub(ALICE, 3, "Accepted"), sub(BOB, 4, "Accepted")]
    expected = run(subs)
    assert expected is None  # bob's pending one at minute 2 may still win
    rng = random.Random(3)
    for _ in range(20):
        rng.shuffle(subs)
        assert run(subs) == expected


def test_a_decision_never_changes_as_later_verdicts_arrive():
    """Once certain, the result must hold whatever the still-pending submissions turn out to be."""
    rng = random.Random(11)
    verdicts = ["Accepted", "Wrong Answer on test #1"]
    for _ in range(300):
        subs = [sub(rng.choice((ALICE, BOB)), rng.choice([1, 2, 3, 4, 29.5, 30, 31]), rng.choice([None, *verdicts]))
                for _ in range(rng.randint(0, 6))]
        now = rng.choice([DURING, AFTER])
        decision = run(subs, now=now)
        pending = [i for i, s in enumerate(subs) if s.verdict is None]
        for outcome in range(2 ** len(pending)):
            judged = list(subs)
            for bit, i in enumerate(pending):
                judged[i] = SubmissionView(subs[i].user_id, subs[i].submitted_at, verdicts[outcome >> bit & 1])
            final = run(judged, now=AFTER)
            assert final is not None  # all judged and past the deadline: always decided
            if decision is not None:
                assert final == decision


def test_rejects_inputs_that_are_not_a_duel():
    with pytest.raises(ValueError):
        decide([], now=DURING, deadline=DEADLINE, player_ids=(ALICE, ALICE), resigned_by=None)
    with pytest.raises(ValueError):
        run([sub(3, 1, "Accepted")])
    with pytest.raises(ValueError):
        run([], resigned_by=3)
