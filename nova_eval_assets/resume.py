"""Crash resume for the inference stage: one checkpoint file per finished block.

The engine batches rows within blocks of ``engine.block_size(batch_size)`` consecutive rows,
so generating a shard block by block gives exactly the rows of one call over the whole
shard. Each finished block is written atomically to

    <inference file without .parquet>.checkpoints/<run key>/block-000042.arrow

where the run key is the inference lineage's data version (prompts, model checkpoint,
settings, replica): a rerun after a crash (SIGKILL, node loss, out of memory) skips the
blocks already there, and a checkpoint made with other inputs is never used. When the
shard's output file is written, the checkpoints are removed. They are Arrow IPC files
(zstd buffers), not Parquet: written in the stage's hot path for every row, and read back
only after a crash.
"""

from __future__ import annotations

import pyarrow as pa

from nova_eval_assets import storage

CHECKPOINT_SUFFIX = ".arrow"


def checkpoint_root(output: str) -> str:
    """The checkpoint folder of one replica's output file (every run key below it)."""
    stem = output[: -len(".parquet")] if output.endswith(".parquet") else output
    return stem + ".checkpoints"


class BlockCheckpoints:
    def __init__(self, output: str, run_key: str):
        self.root = checkpoint_root(output)
        self.folder = storage.join(self.root, run_key)

    def path(self, block: int) -> str:
        return storage.join(self.folder, f"block-{block:06d}{CHECKPOINT_SUFFIX}")

    def load(self, block: int, row_indices: pa.Array) -> pa.Table | None:
        """The block's finished rows, if checkpointed for exactly these rows."""
        path = self.path(block)
        if not storage.exists(path):
            return None
        table = storage.read_arrow(path)
        if table["row_index"].combine_chunks() != row_indices:
            return None  # another split of the shard: regenerate
        return table

    def save(self, block: int, table: pa.Table) -> None:
        storage.write_arrow(self.path(block), table)

    def finished(self) -> list[str]:
        return storage.list_files(self.folder, CHECKPOINT_SUFFIX)

    def finished_rows(self) -> int:
        """Rows of the finished blocks (each file read: they are read only after a crash)."""
        return sum(storage.read_arrow(path).num_rows for path in self.finished())

    def clear(self) -> None:
        """Remove every checkpoint of this output, of any run key."""
        storage.delete(self.root)
