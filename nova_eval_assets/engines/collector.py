"""Python's cyclic garbage collector paused while a block of generations is alive.

Each generated row leaves about 190 small tracked objects (its tokens, their top lists and
the pairs in them) from the moment the engine parses it until the inference stage has
turned the block into Arrow. With the collector on, every 700 new objects it walks the
young ones, and the first pass after a block walks the whole block. Against an instant
server (bench/client.py) the openai engine spent about 740 CPU µs per row without a pause,
where a plain aiohttp client spends about 370; pausing over the requests only still left
about 50 µs per row for that first pass, which a pause until the block is Arrow avoids.
Nothing in a block makes reference cycles, so reference counting frees what it drops; the
collector runs again once the last pause ends, as it did before.

    with collector_paused():       # nested, and from several threads at once
        generations = engine.generate(...)
        table = to_arrow(generations)

    @collector_paused()            # or over a whole function: its locals are freed first
    def generate_block(...): ...
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


class _CollectorPause:
    """One pause shared by every caller: the collector stays off until the last one ends,
    and comes back only if it was on when the first began."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.resume = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.depth == 0:
                self.resume = gc.isenabled()
                gc.disable()
            self.depth += 1
        try:
            yield
        finally:
            with self.lock:
                self.depth -= 1
                if self.depth == 0 and self.resume:
                    gc.enable()


collector_paused = _CollectorPause()

__all__ = ["collector_paused"]
