"""Scheduler process: matchmaking, Taski dispatch, duel finishing, queue expiry, event pruning."""

import sys

from duely.config import load_config
from duely.jobs import run_scheduler

if __name__ == "__main__":
    run_scheduler(load_config(sys.argv[1:]))
