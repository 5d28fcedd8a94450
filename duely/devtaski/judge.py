"""Judging one submission: build it, run it test by test, name the verdict.

`judge` drives a Sandbox; `classify` (one run against one expected answer) and
`outputs_match` are pure. Verdicts use exactly the contract's vocabulary and judging stops at
the first failing test. A program whose output exceeds OUTPUT_LIMIT_BYTES is judged Wrong
Answer (no answer is that long; the contract has no "output limit" verdict).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from duely.devtaski.languages import Language
from duely.devtaski.problems import Problem
from duely.devtaski.sandbox import Limits, RunResult, Sandbox

ACCEPTED = "Accepted"
COMPILATION_ERROR = "Compilation Error"
WRONG_ANSWER = "Wrong Answer"
TIME_LIMIT_EXCEEDED = "Time Limit Exceeded"
MEMORY_LIMIT_EXCEEDED = "Memory Limit Exceeded"
RUNTIME_ERROR = "Runtime Error"

OUTPUT_LIMIT_BYTES = 8 << 20
WALL_FACTOR = 2  # a run may take this many times the time limit in real time (+ WALL_GRACE_MS)...
WALL_GRACE_MS = 1000  # ...so a busy machine does not turn a fast program into a TLE
CPU_GRACE_SECS = 1  # RLIMIT_CPU sits this far above the limit; the verdict uses the measured time
OOM_RSS_FRACTION = 0.9  # a crash this close to the memory limit is a memory problem
OOM_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory", b"out of memory")
COMPILE_LIMITS = Limits(cpu_secs=20, wall_ms=40_000, memory_bytes=2 << 30, output_bytes=64 << 20)


@dataclass(frozen=True)
class JudgingJob:
    """One submission to judge, with everything a worker needs (it never reads the problem set)."""

    submission_id: str
    language: Language
    problem: Problem
    source: str


@dataclass(frozen=True)
class Outcome:
    verdict: str
    detail: str = ""  # for logs only: never published


def run_limits(problem: Problem) -> Limits:
    return Limits(cpu_secs=math.ceil(problem.time_limit_ms / 1000) + CPU_GRACE_SECS,
                  wall_ms=problem.time_limit_ms * WALL_FACTOR + WALL_GRACE_MS,
                  memory_bytes=problem.memory_limit_mb << 20, output_bytes=OUTPUT_LIMIT_BYTES)


def outputs_match(actual: bytes, expected: bytes) -> bool:
    """Token by token: any run of whitespace equals any other, leading/trailing ignored."""
    return actual.split() == expected.split()


def classify(result: RunResult, expected: bytes, time_limit_ms: int, memory_limit_bytes: int) -> str | None:
    """What went wrong on one test (a verdict without "on test #k"), or None when it passed."""
    if result.timed_out or result.cpu_ms > time_limit_ms:
        return TIME_LIMIT_EXCEEDED
    if result.output_limit_hit:
        return WRONG_ANSWER
    if not result.succeeded:
        out_of_memory = any(marker in result.stderr for marker in OOM_MARKERS)
        if out_of_memory or result.max_rss_bytes >= memory_limit_bytes * OOM_RSS_FRACTION:
            return MEMORY_LIMIT_EXCEEDED
        return RUNTIME_ERROR
    if result.max_rss_bytes > memory_limit_bytes:
        return MEMORY_LIMIT_EXCEEDED
    return None if outputs_match(result.stdout, expected) else WRONG_ANSWER


def judge(job: JudgingJob, sandbox: Sandbox, on_test_passed: Callable[[int], None]) -> Outcome:
    """Judge `job` in `sandbox`, calling `on_test_passed(k)` after each passed test."""
    language, problem = job.language, job.problem
    with sandbox.box() as box:
        (box / language.source_name).write_text(job.source, encoding="utf-8")
        if language.compile:
            built = sandbox.run(language.compile, box, COMPILE_LIMITS, writable_box=True)
            if not built.succeeded:
                return Outcome(COMPILATION_ERROR, _describe(built))
        limits = run_limits(problem)
        for number, test in enumerate(problem.tests, start=1):
            result = sandbox.run(language.run, box, limits, stdin=test.input)
            failure = classify(result, test.output, problem.time_limit_ms, limits.memory_bytes)
            if failure:
                return Outcome(f"{failure} on test #{number}", _describe(result))
            on_test_passed(number)
    return Outcome(ACCEPTED)


def _describe(result: RunResult) -> str:
    return (f"exit={result.exit_code} signal={result.signal} cpu_ms={result.cpu_ms} wall_ms={result.wall_ms} "
            f"rss_mb={result.max_rss_bytes >> 20} timed_out={result.timed_out} "
            f"stderr={result.stderr[-300:].decode(errors='replace')!r}")
