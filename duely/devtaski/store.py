"""What the development Taski knows about submissions: every one in memory, judged ones on disk.

A judged submission's final `verdict` message is appended to `judged.jsonl` in the state
directory *before* it is published, so after a crash (even kill -9) a re-sent submission that
was judged gets the very same message again, and one that was still queued or being judged is
unknown and gets judged again. Lines are flushed, not fsynced: a process crash loses nothing,
a power cut may. A torn last line (killed mid-write) is skipped on load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from duely import logs

log = logging.getLogger(__name__)

JUDGED_FILE = "judged.jsonl"
QUEUED, JUDGING, JUDGED = "queued", "judging", "judged"


@dataclass
class Record:
    submission_id: str
    status: str
    seq: int = 0  # last seq given to a message about this submission
    judgings: int = 0  # how many times a worker started on it (1 unless a worker died)
    verdict_message: dict | None = None

    def public(self) -> dict:
        verdict = self.verdict_message["verdict"] if self.verdict_message else None
        return {"submission_id": self.submission_id, "status": self.status, "seq": self.seq,
                "judgings": self.judgings, "verdict": verdict}


class SubmissionStore:
    """Thread-safe; every method is one atomic step."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / JUDGED_FILE
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._load()
        self._file = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        skipped = 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    message = json.loads(line)
                    sid, seq = str(message["submission_id"]), int(message["seq"])
                except (ValueError, KeyError, TypeError):
                    skipped += 1
                    continue
                self._records[sid] = Record(sid, JUDGED, seq=seq, verdict_message=message)
        log.info("judged submissions loaded", extra=logs.kv(count=len(self._records), skipped_lines=skipped, path=self.path))

    def claim(self, submission_id: str) -> tuple[Record, bool]:
        """The submission's record and True if it is new (now queued), or its current state."""
        with self._lock:
            record = self._records.get(submission_id)
            if record is not None:
                return dataclasses.replace(record), False
            record = self._records[submission_id] = Record(submission_id, QUEUED)
            return dataclasses.replace(record), True

    def get(self, submission_id: str) -> Record | None:
        with self._lock:
            record = self._records.get(submission_id)
            return dataclasses.replace(record) if record else None

    def start_judging(self, submission_id: str) -> None:
        with self._lock:
            record = self._records[submission_id]
            record.status = JUDGING
            record.judgings += 1

    def next_seq(self, submission_id: str) -> int:
        with self._lock:
            record = self._records[submission_id]
            record.seq += 1
            return record.seq

    def record_verdict(self, submission_id: str, message: dict) -> None:
        """Persist the final message, then mark the submission judged."""
        with self._lock:
            self._file.write(json.dumps(message, separators=(",", ":")) + "\n")
            self._file.flush()
            record = self._records[submission_id]
            record.status = JUDGED
            record.verdict_message = message

    def forget(self, submission_id: str) -> None:
        """Judging failed for reasons of ours: a re-send will judge it from scratch."""
        with self._lock:
            self._records.pop(submission_id, None)

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts = {QUEUED: 0, JUDGING: 0, JUDGED: 0}
            for record in self._records.values():
                counts[record.status] += 1
            return counts

    def close(self) -> None:
        with self._lock:
            self._file.close()
