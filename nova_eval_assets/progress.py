"""Progress of long stages, for whoever listens (the CLI's progress bar).

Stages report ``(stage, done, total)``; Dagster assets also log each batch. Listeners are
process-local, which is what in-process materialization from the CLI needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int], None]
_listeners: list[Listener] = []


def notify(stage: str, done: int, total: int) -> None:
    for listener in list(_listeners):
        listener(stage, done, total)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
