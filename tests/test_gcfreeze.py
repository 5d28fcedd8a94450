"""Long-running processes exempt their start-up heap from the collector's full passes
(duely/gcfreeze.py), so a full pass looks only at what was made since."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# In a child process: freezing the test runner's own heap would outlive this test.
_CHILD = """
import gc, json
import duely.api, duely.jobs, duely.verdicts  # what the web, scheduler and consumer import
tracked_before = len(gc.get_objects())
from duely.gcfreeze import freeze_startup_heap
freeze_startup_heap()
made_after = [[n] for n in range(1000)]  # objects of the moment: a full pass must still see them
print(json.dumps({"before": tracked_before, "frozen": gc.get_freeze_count(), "after": len(gc.get_objects()),
                  "sees_new": any(o is made_after[0] for o in gc.get_objects())}))
"""


def test_a_full_pass_after_start_up_sees_only_what_was_made_since():
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["before"] > 20_000  # the imports alone: what every full pass walked before
    assert got["frozen"] >= got["before"] * 0.9
    assert got["after"] < 5_000
    assert got["sees_new"]
