"""`python -m duely.devtaski [--devtaski-port N --kafka-bootstrap-servers H:P ...]`: the development Taski."""

import sys

from duely import logs
from duely.config import load_config
from duely.devtaski.server import run


def main() -> None:
    config = load_config(sys.argv[1:])
    logs.setup(config.log_level, "devtaski")
    run(config)


if __name__ == "__main__":
    main()
