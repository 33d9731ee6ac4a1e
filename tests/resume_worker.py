"""Run one replica's inference in its own process (the crash-resume test kills it).

    python -m tests.resume_worker RECIPE REPLICA [SECONDS_PER_BATCH]

The optional pause after each batch only spreads the run out so that the test can kill it
between two checkpoints; it changes nothing in what is generated. Prints the summary.
"""

from __future__ import annotations

import json
import sys
import time

from nova_eval_assets import stages
from nova_eval_assets.recipe import load_recipe


def main() -> None:
    loaded = load_recipe(sys.argv[1])
    replica = int(sys.argv[2])
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

    def on_batch(done: int, total: int) -> None:
        print(f"progress {done}/{total}", flush=True)
        time.sleep(pause)

    summary = stages.run_inference(loaded, replica, on_batch=on_batch)
    summary.pop("lineage", None)
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
