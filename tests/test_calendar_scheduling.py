"""calendar_scheduling (tasks/calendar_scheduling.py): Natural Plan's evaluator rule on
hand-written answers, the rows' checks, and a run on the bundled model over a file in
Natural Plan's published JSON layout (records keyed by id)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from nova_eval_assets import storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.recipe import load_recipe
from nova_eval_assets.tasks.base import FieldProblem, TaskOptions
from nova_eval_assets.tasks.calendar_scheduling import TASK, parse_plan, solved
from nova_eval_assets.tasks.sources import SourceUnavailable, downloaded

GOLDEN = "Here is the proposed time: Monday, 14:30 - 15:00 "
QUARTER = "Here is the proposed time: Wednesday, 10:15 - 10:45 "

# (answer, golden plan, solved), each worked by hand with Natural Plan's evaluator rule: the
# first "Day, H:MM - H:MM" of each, day and times equal, a time's hours read with ":30" as
# half an hour and any other minutes as none
ANSWERS = [
    ("Here is the proposed time: Monday, 14:30 - 15:00", GOLDEN, True),
    ("Monday, 14:30 - 15:00", GOLDEN, True),
    ("Monday, 14:30 - 15:00.", GOLDEN, True),
    ("The meeting: Monday, 14:30 - 15:00 PM works.", GOLDEN, True),
    ("Monday, 14:30 - 15:30", GOLDEN, False),  # another end
    ("Tuesday, 14:30 - 15:00", GOLDEN, False),  # another day
    ("14:30 - 15:00", GOLDEN, False),  # no day: no plan
    ("Monday 14:30 - 15:00", GOLDEN, False),  # no comma: no plan
    ("Monday,14:30 - 15:00", GOLDEN, False),  # no space after the comma: no plan
    ("Monday, 14:30-15:00", GOLDEN, False),  # no spaces around the dash: no plan
    ("Monday, 2:30 - 3:00", GOLDEN, False),  # 2.5 and 3.0, not 14.5 and 15.0
    ("monday, 14:30 - 15:00", GOLDEN, False),  # the day is compared as written
    ("Monday, 14:30 - 15:00 or Tuesday, 9:00 - 9:30", GOLDEN, True),  # the first plan
    ("Tuesday, 9:00 - 9:30 or Monday, 14:30 - 15:00", GOLDEN, False),  # the first plan
    ("Monday, 14:3 - 15:00", GOLDEN, False),  # "3" is not "30": 14.0, not 14.5
    ("Monday, 14:30 - 15:0", GOLDEN, True),  # 15.0
    ("", GOLDEN, False),
    ("I cannot find a time that works for everyone.", GOLDEN, False),
    ("Wednesday, 10:15 - 10:45", QUARTER, True),
    ("Wednesday, 10:15 - 11:15", QUARTER, False),  # 10.0 - 11.0 against 10.0 - 10.0
    ("Monday, 14:15 - 15:00", "Monday, 14:00 - 15:00", True),  # ":15" reads as ":00"
    ("Monday, 14:45 - 15:15", "Monday, 14:00 - 15:00", True),  # so do ":45" and ":15"
    ("Monday, 14:30 - 15:15", "Monday, 14:00 - 15:00", False),  # ":30" does not
    ("Wednesday, 10:15 - 10:45 and Wednesday, 10:00 - 10:30", QUARTER, True),
    ("Wednesday, 10:00 - 10:30 and Wednesday, 10:15 - 10:45", QUARTER, False),
    ("Friday, 09:00 - 09:30", "Friday, 9:00 - 9:30", True),  # 09 is 9
]


@pytest.mark.parametrize(("answer", "golden", "expected"), ANSWERS)
def test_the_evaluators_rule_on_hand_written_answers(answer, golden, expected):
    assert solved(answer, golden) is expected


def test_parse_plan_reads_hours_as_natural_plan_does():
    assert parse_plan("Monday, 9:30 - 10:00") == ("Monday", 9.5, 10.0)
    assert parse_plan("so Thursday, 13:15 - 13:45 it is") == ("Thursday", 13.0, 13.0)
    assert parse_plan("no plan here") is None


def row(**changes):
    base = {
        "prompt_5shot": "TASK: ...\nSOLUTION:",
        "golden_plan": GOLDEN,
        "num_people": 3,
        "num_days": 1,
    }
    return {**base, **changes}


def test_a_row_becomes_a_sample_with_its_strata_and_bad_rows_name_the_field():
    sample = TASK.sample(row(num_people="3"), None, TaskOptions())
    assert (sample.prompt, sample.target) == ("TASK: ...\nSOLUTION:", GOLDEN)
    assert dict(sample.metadata) == {"num_people": 3, "num_days": 1}
    for changes, field in [
        ({"golden_plan": "Monday afternoon"}, "golden_plan"),
        ({"num_days": 0}, "num_days"),
        ({"num_people": True}, "num_people"),
        ({"prompt_5shot": ""}, "prompt_5shot"),
    ]:
        with pytest.raises(FieldProblem) as problem:
            TASK.sample(row(**changes), None, TaskOptions())
        assert problem.value.field_name == field


@pytest.mark.model
def test_calendar_scheduling_runs_on_the_bundled_model_from_natural_plans_json(
    tmp_path, monkeypatch
):
    # Natural Plan publishes data/calendar_scheduling.json: an object of records by id
    records = {
        "calendar_scheduling_example_0": row(num_people=2, num_days=1),
        "calendar_scheduling_example_1": row(
            golden_plan="Here is the proposed time: Tuesday, 9:00 - 9:30 ", num_days=2
        ),
        "calendar_scheduling_example_2": row(golden_plan="no plan at all"),  # rejected
    }
    served = tmp_path / "served"
    served.mkdir()
    (served / "calendar_scheduling.json").write_text(json.dumps(records))
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setenv("NOVA_EVAL_CACHE", str(tmp_path / "cache"))
    recipe = {
        "run": {"name": "calendar", "model_name_or_path": "smollm2-135m-instruct",
                "data_s3_path": ""},
        "evaluation": {"task": "calendar_scheduling", "strategy": "fs", "metric": "exact_match"},
        "inference": {"max_new_tokens": 12},
        "dataset": {"on_invalid": "skip"},
    }  # fmt: skip
    with FileServer(served) as server:  # the published file, fetched at run time
        recipe["dataset"]["path"] = f"{server.url}/calendar_scheduling.json"
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        outcome = run_evaluation(
            load_recipe(tmp_path / "recipe.yaml"),
            instance=dg.DagsterInstance.ephemeral(),
            show_progress=False,
        )
    assert outcome.report is not None, outcome.message
    assert outcome.report["counts"]["rejected_rows"] == 1
    examples = pq.read_table(outcome.report["paths"]["examples"]).to_pylist()
    expected = [float(solved(e["prediction"], e["gold"])) for e in examples]
    assert [dict(e["metrics"])["exact_match"] for e in examples] == expected
    results = storage.read_json(outcome.report["paths"]["results"])["results"]
    assert results["custom|calendar_scheduling_fs|0"]["exact_match"] == sum(expected) / 2
    assert [json.loads(e["metadata"])["num_days"] for e in examples] == [1, 2]
    validation = json.loads(
        (tmp_path / "outputs" / "calendar" / "stages" / "validation_report.json").read_text()
    )
    assert validation["source"] == recipe["dataset"]["path"]  # the URL, as results record


class FileServer:
    """A real HTTP server on 127.0.0.1 serving a folder, counting its GET requests."""

    def __init__(self, folder):
        self.folder, self.gets = folder, 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(outer.folder), **kwargs)

            def do_GET(self):
                outer.gets += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_published_file_is_downloaded_once_and_a_failed_download_leaves_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("NOVA_EVAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data.json").write_text('{"a": {"x": 1}}')
    with FileServer(tmp_path) as server:
        first = downloaded(f"{server.url}/data.json", TASK)
        again = downloaded(f"{server.url}/data.json", TASK)
        assert first == again and server.gets == 1  # the cache answers the second time
        assert json.loads(Path(first).read_text()) == {"a": {"x": 1}}
        with pytest.raises(SourceUnavailable) as failed:
            downloaded(f"{server.url}/missing.json", TASK)
    assert f"{server.url}/missing.json" in str(failed.value) and "404" in str(failed.value)
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == ["data.json"]
