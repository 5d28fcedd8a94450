"""Consumer process: applies Taski's judging messages from Kafka to submissions and duels."""

import sys

from duely.config import load_config
from duely.verdicts import run_consumer

if __name__ == "__main__":
    run_consumer(load_config(sys.argv[1:]))
