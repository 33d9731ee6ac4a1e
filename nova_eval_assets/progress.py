"""Progress of long stages, for whoever listens (the CLI's progress bars, the Dagster log).

Stages report ``(stage, done, total)``. A replica's inference also says how many of its
done rows an earlier run finished (``kept``: checkpointed blocks it resumes, an output it
reuses), so that a rate counts only the rows this run generates. Listeners are
process-local; a replica run in a child process forwards its reports to the parent
(:mod:`nova_eval_assets.assets.parallel`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from nova_eval_assets.recipe import LoadedRecipe


@dataclass(frozen=True)
class Report:
    stage: str
    done: int
    total: int
    kept: int = 0  # of ``done``: rows an earlier run finished


Listener = Callable[[str, int, int], None]
ReportListener = Callable[[Report], None]
_listeners: list[Listener] = []
_report_listeners: list[ReportListener] = []


def notify(stage: str, done: int, total: int, kept: int = 0) -> None:
    for listener in list(_listeners):
        listener(stage, done, total)
    report = Report(stage, done, total, kept)
    for report_listener in list(_report_listeners):
        report_listener(report)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@contextmanager
def listening_to_reports(listener: ReportListener) -> Iterator[None]:
    """As :func:`listening`, with the whole :class:`Report` (``kept`` included)."""
    _report_listeners.append(listener)
    try:
        yield
    finally:
        _report_listeners.remove(listener)


def replica_stage(replica: int) -> str:
    """The stage name of one replica's inference in reports."""
    return f"replica {replica}"


def stage_replica(stage: str) -> int | None:
    """The replica of a :func:`replica_stage` name (None: another stage)."""
    prefix, _, number = stage.partition(" ")
    return int(number) if prefix == "replica" and number.isdigit() else None


# ---------------------------------------------------------------- rate and time left


def format_duration(seconds: float) -> str:
    """``H:MM:SS``."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class RowRate:
    """Rows per second and the time left of one replica, from the rows this run generates.

    The clock starts at the first report of a row generated here: rows kept from an
    earlier run arrive at once and are not a rate, and the start-up before the first batch
    (a model load, a server start) is not one either. So the rate is known from the second
    report of generated rows on."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.done = self.total = self.kept = 0
        self.rate: float | None = None
        self._start: tuple[float, int] | None = None  # (time, done) of the first generated report

    def update(self, done: int, total: int, kept: int = 0) -> None:
        self.done, self.total, self.kept = done, total, kept
        if done <= kept:  # resumed or reused rows only, so far
            return
        now = self.clock()
        if self._start is None:
            self._start = (now, done)
            return
        started, done_then = self._start
        if now > started and done > done_then:
            self.rate = (done - done_then) / (now - started)

    @property
    def eta_s(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        if not self.rate:
            return None
        return (self.total - self.done) / self.rate

    def speed(self) -> str:
        """``'512.3 rows/s, ETA 0:00:17'`` (``'? rows/s, ETA ?'`` while unknown)."""
        rate = "?" if self.rate is None else f"{self.rate:,.1f}"
        eta = self.eta_s
        return f"{rate} rows/s, ETA {'?' if eta is None else format_duration(eta)}"

    def describe(self) -> str:
        """``'8/12 rows, 4.0 rows/s, ETA 0:00:01'``, and the rows kept from an earlier run."""
        kept = f" ({self.kept:,} kept from an earlier run)" if self.kept else ""
        return f"{self.done:,}/{self.total:,} rows{kept}, {self.speed()}"


class BlockMarks:
    """Which reports finish a block of ``block`` rows (the last, shorter block included):
    one log line per block, not one per request. ``block`` None (not known): a report
    ``fallback_s`` seconds after the last mark, and the last report, are marks."""

    def __init__(
        self,
        block: int | None,
        fallback_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.block = block
        self.fallback_s = fallback_s
        self.clock = clock
        self._marked_done = 0
        self._marked_at = clock()

    def finished_block(self, done: int, total: int) -> bool:
        if done <= self._marked_done:
            return False
        if self.block:
            mark = done == total or done // self.block > self._marked_done // self.block
        else:
            mark = done == total or self.clock() - self._marked_at >= self.fallback_s
        if mark:
            self._marked_done, self._marked_at = done, self.clock()
        return mark


# ---------------------------------------------------------------- what a replica starts from


def block_rows(loaded: LoadedRecipe) -> int | None:
    """Rows per inference block (the unit of the checkpoints): ``batch_size`` times the
    engine's batches per block. Without ``inference.batch_size``, the engine's default
    batch size, from the engine the stage loaded (call it once the stage reports); None for
    a server the replica manages, whose engine is the stage's own."""
    from nova_eval_assets.engines.base import block_size
    from nova_eval_assets.stages.engine_setup import load_engine

    inference = loaded.recipe.inference
    if inference.batch_size:
        return block_size(inference.batch_size)  # every engine: batch_size * BLOCK_BATCHES
    if inference.engine == "openai" and inference.server is not None:
        return None
    engine = load_engine(loaded)  # cached: the stage's engine, not a second load
    return engine.block_size(engine.default_batch_size)


class ReplicaProgress:
    """One replica's inference reports as its asset gets them: passed on to the listeners
    with the rows kept from an earlier run, and a line to log for each block generated
    here (``'replica 0: 1,024/10,000 rows, 512.3 rows/s, ETA 0:00:17'``)."""

    def __init__(
        self,
        loaded: LoadedRecipe,
        replica: int,
        reuse: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loaded, self.replica, self.reuse, self.clock = loaded, replica, reuse, clock
        self.rate = RowRate(clock)
        self.kept = 0
        self.marks: BlockMarks | None = None

    def update(self, done: int, total: int) -> str | None:
        if self.marks is None:  # the first report: the engine is loaded, no block saved yet
            from nova_eval_assets.stages.inference import rows_kept

            self.kept = rows_kept(self.loaded, self.replica, self.reuse)
            self.marks = BlockMarks(block_rows(self.loaded), clock=self.clock)
        self.rate.update(done, total, self.kept)
        notify(replica_stage(self.replica), done, total, self.kept)
        # kept blocks arrive at once: the stage's summary tells them, not a line each
        if self.marks.finished_block(done, total) and done > self.kept:
            return f"replica {self.replica}: {self.rate.describe()}"
        return None


# ---------------------------------------------------------------- the CLI's bars


class ReplicaBars:
    """One tqdm bar per replica (position = replica number): rows done/total, rows/s and
    ETA of the rows generated in this run (:class:`RowRate`). ``enabled`` False (``--quiet``):
    nothing is drawn."""

    BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} rows{postfix}"

    def __init__(
        self,
        replicas: int,
        enabled: bool = True,
        file: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from tqdm import tqdm

        self.rates = {replica: RowRate(clock) for replica in range(replicas)}
        self.bars = {
            replica: tqdm(
                total=None,
                desc=f"replica {replica}",
                position=replica,
                bar_format=self.BAR_FORMAT,
                disable=not enabled,
                file=file,
                dynamic_ncols=True,
            )
            for replica in range(replicas)
        }

    def update(self, replica: int, done: int, total: int, kept: int = 0) -> None:
        rate, bar = self.rates[replica], self.bars[replica]
        rate.update(done, total, kept)
        bar.total = total
        bar.n = done
        bar.set_postfix_str(rate.speed(), refresh=False)
        bar.refresh()

    def report(self, report: Report) -> None:
        """A :func:`listening_to_reports` listener: the replicas' inference reports."""
        replica = stage_replica(report.stage)
        if replica in self.bars:
            self.update(replica, report.done, report.total, report.kept)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()

    def __enter__(self) -> ReplicaBars:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
