"""Keep the garbage collector's full passes short in Duely's long-running processes.

CPython's cyclic collector now and then makes a full pass (generation 2) over every container
object alive, and the process does nothing else meanwhile. A web worker holds ~110,000 objects
once the app is loaded (modules, Flask, SQLAlchemy, schemas): a full pass took 60-130 ms of
CPU there, and under a loaded box 200-330 ms of wall time, during which every request and held
poll of that worker waited (measured with gc.callbacks in `bench/updates.py --parts actions`
and `bench/swarm.py`). Almost all of those objects live as long as the process, so after
start-up they are moved out of the collector's reach with `gc.freeze()`: full passes then look
only at what was made since (the connections, requests and polls of the moment).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then exempt every object alive now from later collections. Call when a
    process has finished starting (imports done, app and engines built), before it serves."""
    gc.collect()
    gc.freeze()
