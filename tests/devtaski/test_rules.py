"""The pure parts: verdict classification, output comparison, fault switches, the judged-results store."""

from __future__ import annotations

import json

import pytest

from duely.devtaski import judge
from duely.devtaski.faults import Faults, FaultSpecError
from duely.devtaski.sandbox import RunResult
from duely.devtaski.store import JUDGED, SubmissionStore

MB = 1 << 20


def run(**kw) -> RunResult:
    base = dict(exit_code=0, signal=None, cpu_ms=20, wall_ms=25, max_rss_bytes=10 * MB, timed_out=False,
                stdout=b"5\n", output_limit_hit=False, stderr=b"")
    return RunResult(**{**base, **kw})


def classify(result: RunResult, expected: bytes = b"5") -> str | None:
    return judge.classify(result, expected, time_limit_ms=1000, memory_limit_bytes=256 * MB)


@pytest.mark.parametrize("actual, expected, same", [
    (b"1 2 3\n", b"1 2 3", True),
    (b"  1\n2\t3  \n\n", b"1 2 3\n", True),
    (b"1 2", b"1 2 3", False),
    (b"12 3", b"1 23", False),
    (b"YES", b"yes", False),
    (b"", b"", True),
])
def test_outputs_match_token_by_token(actual, expected, same):
    assert judge.outputs_match(actual, expected) is same


def test_a_correct_run_passes():
    assert classify(run()) is None


def test_a_wrong_output_is_wrong_answer():
    assert classify(run(stdout=b"6\n")) == judge.WRONG_ANSWER


def test_too_much_cpu_is_tle_even_when_the_output_is_right():
    assert classify(run(cpu_ms=1001)) == judge.TIME_LIMIT_EXCEEDED


def test_killed_at_the_wall_limit_is_tle():
    assert classify(run(timed_out=True, exit_code=None, signal=9, cpu_ms=3)) == judge.TIME_LIMIT_EXCEEDED


@pytest.mark.parametrize("stderr", [b"Traceback...\nMemoryError\n", b"terminate called after throwing an instance of 'std::bad_alloc'"])
def test_a_crash_out_of_memory_is_mle(stderr):
    assert classify(run(exit_code=1, stderr=stderr)) == judge.MEMORY_LIMIT_EXCEEDED


def test_a_crash_near_the_memory_limit_is_mle():
    assert classify(run(exit_code=None, signal=11, max_rss_bytes=250 * MB)) == judge.MEMORY_LIMIT_EXCEEDED


@pytest.mark.parametrize("result", [run(exit_code=1, stderr=b"ZeroDivisionError"), run(exit_code=None, signal=11)])
def test_other_crashes_are_runtime_errors(result):
    assert classify(result) == judge.RUNTIME_ERROR


def test_hitting_the_output_limit_is_wrong_answer():
    assert classify(run(exit_code=1, output_limit_hit=True)) == judge.WRONG_ANSWER


def test_run_limits_follow_the_problem():
    from duely.devtaski.problems import load_problems

    problem = next(iter(load_problems().values()))
    limits = judge.run_limits(problem)
    assert limits.memory_bytes == problem.memory_limit_mb * MB
    assert limits.cpu_secs * 1000 > problem.time_limit_ms and limits.wall_ms > problem.time_limit_ms


# -- fault switches --

def test_rate_limit_answers_the_next_n_requests_then_stops():
    faults = Faults()
    faults.configure({"rate_limit": {"count": 2, "retry_after": 7}})
    answers = [faults.take_http()[1] for _ in range(3)]
    assert [a.status if a else None for a in answers] == [429, 429, None]
    assert answers[0].retry_after_secs == 7


def test_slow_without_count_lasts_until_reset():
    faults = Faults()
    faults.configure({"slow": {"delay_ms": 250}})
    assert all(faults.take_http() == (0.25, None) for _ in range(5))
    faults.reset()
    assert faults.take_http() == (0.0, None) and faults.snapshot() == {}


def test_faults_merge_and_switch_off_one_by_one():
    faults = Faults()
    faults.configure({"server_error": {"count": 1, "status": 500}, "kafka_duplicate": True})
    faults.configure({"kafka_reorder": True, "kafka_duplicate": None})
    assert set(faults.snapshot()) == {"server_error", "kafka_reorder"}
    assert faults.kafka().reorder and not faults.kafka().duplicate
    assert faults.take_http()[1].status == 500


@pytest.mark.parametrize("spec", [[], {"meteor": True}, {"rate_limit": {"count": 0}}, {"slow": {}},
                                  {"server_error": {"status": 404}}, {"kafka_reorder": "yes"}])
def test_invalid_fault_specs_change_nothing(spec):
    faults = Faults()
    faults.configure({"kafka_duplicate": True})
    with pytest.raises(FaultSpecError):
        faults.configure(spec)
    assert faults.snapshot() == {"kafka_duplicate": True}


# -- store --

def test_judged_results_survive_a_restart_and_a_torn_last_line(tmp_path):
    store = SubmissionStore(tmp_path)
    record, created = store.claim("s1")
    assert created and record.status == "queued"
    store.start_judging("s1")
    assert [store.next_seq("s1") for _ in range(3)] == [1, 2, 3]
    message = {"submission_id": "s1", "seq": 3, "type": "verdict", "verdict": "Accepted", "at": "2026-01-01T00:00:00Z"}
    store.record_verdict("s1", message)
    store.claim("s2")  # never judged: forgotten by a restart
    store.close()
    with open(tmp_path / "judged.jsonl", "a") as f:
        f.write('{"submission_id": "s3", "seq"')  # killed mid-write

    reloaded = SubmissionStore(tmp_path)
    assert reloaded.get("s1").status == JUDGED and reloaded.get("s1").verdict_message == message
    assert reloaded.get("s2") is None and reloaded.get("s3") is None
    assert json.loads((tmp_path / "judged.jsonl").read_text().splitlines()[0]) == message


def test_claim_is_once_per_submission(tmp_path):
    store = SubmissionStore(tmp_path)
    assert store.claim("s1")[1] is True
    assert store.claim("s1")[1] is False
