"""Each verdict on real runs: what a solution does decides the verdict and the test it names.

The misbehaving solutions are submitted together (they judge in parallel on the pool) and
each test then checks its own; a-plus-b is the problem throughout.
"""

from __future__ import annotations

import shutil
import textwrap
import time

import psutil
import pytest

from tests.devtaski.helpers import assert_judged_cleanly

SLUG = "a-plus-b"
needs_gxx = pytest.mark.skipif(not shutil.which("g++"), reason="g++ is not installed")
needs_bwrap = pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap is not installed")

SOLVE = "a, b = map(int, input().split())\nprint(a + b)\n"
SOLUTIONS = {
    "python_ok": ("python", SOLVE),
    "wrong": ("python", "a, b = map(int, input().split())\nprint(a + b + 1)\n"),
    "wrong_for_large": ("python", "a, b = map(int, input().split())\nprint(a + b if abs(a) < 10**6 else 0)\n"),
    "infinite_loop": ("python", "while True:\n    pass\n"),
    "memory_hog": ("python", "hoard = []\nwhile True:\n    hoard.append(bytearray(10**7))\n"),
    "crash": ("python", "a, b = map(int, input().split())\nprint(a // 0)\n"),
    "crash_after_two": ("python", textwrap.dedent("""
        import sys
        a, b = map(int, input().split())
        print(a + b) if (a, b) in {(2, 3), (-5, 5)} else sys.exit(3)
    """)),
    "sleeper": ("python", "import time\ntime.sleep(60)\n"),
    "cpp_ok": ("cpp", "#include <iostream>\nint main() { long long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n"),
    "cpp_compile_error": ("cpp", "int main() { return missing_name; }\n"),
    "cpp_segfault": ("cpp", "#include <cstdio>\nint main() { int* volatile p = nullptr; *p = 1; std::printf(\"%d\", *p); }\n"),
    "cpp_memory_hog": ("cpp", "#include <vector>\n#include <cstdio>\n"
                              "int main() { std::vector<long long> v(1LL << 32); std::printf(\"%lld\", v[7]); }\n"),
}


@pytest.fixture(scope="module")
def judged(devtaski_server, problem_by_slug, taski_messages) -> dict[str, list[dict]]:
    if not devtaski_server.running:
        devtaski_server.start()
    devtaski_server.reset_faults()
    task_id = problem_by_slug[SLUG].id
    ids = {name: devtaski_server.submit(task_id, source, language) for name, (language, source) in SOLUTIONS.items()
           if language != "cpp" or shutil.which("g++")}
    return {name: taski_messages.wait_for(sid, timeout_secs=120) for name, sid in ids.items()}


def first_failing_test(problem, predicate) -> int:
    """1-based number of the first test whose input makes `predicate(a, b)` false."""
    for number, test in enumerate(problem.tests, start=1):
        a, b = map(int, test.input.split())
        if not predicate(a, b):
            return number
    raise AssertionError("every test passes")


def test_correct_python_is_accepted(judged, problem_by_slug):
    assert_judged_cleanly(judged["python_ok"], len(problem_by_slug[SLUG].tests), "Accepted")


@needs_gxx
def test_correct_cpp_is_accepted(judged, problem_by_slug):
    assert_judged_cleanly(judged["cpp_ok"], len(problem_by_slug[SLUG].tests), "Accepted")


def test_wrong_output_is_wrong_answer_on_the_first_test(judged):
    assert_judged_cleanly(judged["wrong"], 0, "Wrong Answer on test #1")


def test_judging_stops_at_the_first_failing_test(judged, problem_by_slug):
    k = first_failing_test(problem_by_slug[SLUG], lambda a, b: abs(a) < 10**6)
    assert k > 1, "the test data should start with small numbers"
    assert_judged_cleanly(judged["wrong_for_large"], k - 1, f"Wrong Answer on test #{k}")


def test_infinite_loop_is_time_limit_exceeded(judged):
    assert_judged_cleanly(judged["infinite_loop"], 0, "Time Limit Exceeded on test #1")


def test_sleeping_past_the_wall_limit_is_time_limit_exceeded(judged):
    assert_judged_cleanly(judged["sleeper"], 0, "Time Limit Exceeded on test #1")


def test_memory_hog_is_memory_limit_exceeded(judged):
    assert_judged_cleanly(judged["memory_hog"], 0, "Memory Limit Exceeded on test #1")


@needs_gxx
def test_cpp_memory_hog_is_memory_limit_exceeded(judged):
    assert_judged_cleanly(judged["cpp_memory_hog"], 0, "Memory Limit Exceeded on test #1")


def test_crash_is_runtime_error(judged):
    assert_judged_cleanly(judged["crash"], 0, "Runtime Error on test #1")


def test_nonzero_exit_is_runtime_error_on_that_test(judged, problem_by_slug):
    k = first_failing_test(problem_by_slug[SLUG], lambda a, b: (a, b) in {(2, 3), (-5, 5)})
    assert_judged_cleanly(judged["crash_after_two"], k - 1, f"Runtime Error on test #{k}")


@needs_gxx
def test_cpp_segfault_is_runtime_error(judged):
    assert_judged_cleanly(judged["cpp_segfault"], 0, "Runtime Error on test #1")


@needs_gxx
def test_cpp_that_does_not_compile_is_compilation_error(judged):
    assert_judged_cleanly(judged["cpp_compile_error"], 0, "Compilation Error")


def processes_of(uids: list[int]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids_of = proc.info["uids"]
        if uids_of and uids_of.real in uids:
            found.append(proc)
    return found


def test_fork_bomb_is_contained_and_leaves_nothing_behind(devtaski, taski_messages, problem_by_slug):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    uids = devtaski.worker_uids()
    sid = devtaski.submit(problem_by_slug[SLUG].id, bomb)
    verdict = taski_messages.verdict(sid, timeout_secs=60)["verdict"]
    assert verdict in ("Time Limit Exceeded on test #1", "Runtime Error on test #1")
    time.sleep(0.2)
    assert processes_of(uids) == []
    # and the judge is as good as before: a correct solution is judged at once
    started = time.monotonic()
    ok = devtaski.submit(problem_by_slug[SLUG].id, SOLVE)
    assert taski_messages.verdict(ok, timeout_secs=30)["verdict"] == "Accepted"
    assert time.monotonic() - started < 10


@needs_bwrap
def test_solutions_cannot_read_answers_or_use_the_network(devtaski, taski_messages, problem_by_slug):
    problem = problem_by_slug[SLUG]
    from duely.devtaski.problems import BUNDLED_DIR

    answer_file = BUNDLED_DIR / SLUG / "tests" / "01.out"
    # Accepted only if both the answer file and the dev Taski's own port are out of reach.
    snoop = textwrap.dedent(f"""
        import socket
        try:
            open({str(answer_file)!r}).read()
            print("leak")
        except OSError:
            try:
                socket.create_connection(("127.0.0.1", {devtaski.port}), timeout=1)
                print("network")
            except OSError:
                a, b = map(int, input().split())
                print(a + b)
    """)
    sid = devtaski.submit(problem.id, snoop)
    assert taski_messages.verdict(sid)["verdict"] == "Accepted"
