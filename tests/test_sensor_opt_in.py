"""The dataset sensor starts runs for anyone who can write a watched file, so it is created
stopped; ``NOVA_EVAL_DATASET_SENSOR=running`` opts a deployment in. The other sensors (the
automation of an evaluation already started) keep running by default."""

from __future__ import annotations

import dagster as dg
import pytest

from nova_eval_assets.assets.sensors import SENSOR_NAME, STATUS_ENV
from nova_eval_assets.definitions import build_definitions
from tests.conftest import ticket_lines
from tests.orchestration_support import location


def sensor_status(definitions: dg.Definitions, name: str) -> dg.DefaultSensorStatus:
    return definitions.get_sensor_def(name).default_status


def test_the_dataset_sensor_is_stopped_by_default(make_recipe, monkeypatch):
    monkeypatch.delenv(STATUS_ENV, raising=False)
    definitions = build_definitions([make_recipe(ticket_lines(4))])
    assert sensor_status(definitions, SENSOR_NAME) == dg.DefaultSensorStatus.STOPPED
    for automation in ("nova_eval_replicas", "nova_eval_reports", "nova_eval_followups"):
        assert sensor_status(definitions, automation) == dg.DefaultSensorStatus.RUNNING


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("running", dg.DefaultSensorStatus.RUNNING),
        (" Running ", dg.DefaultSensorStatus.RUNNING),
        ("stopped", dg.DefaultSensorStatus.STOPPED),
        ("", dg.DefaultSensorStatus.STOPPED),
    ],
)
def test_the_environment_opts_in(make_recipe, monkeypatch, value, expected):
    monkeypatch.setenv(STATUS_ENV, value)
    definitions = location([make_recipe(ticket_lines(4))])
    assert sensor_status(definitions, SENSOR_NAME) == expected


def test_another_value_is_one_clear_error(make_recipe, monkeypatch):
    monkeypatch.setenv(STATUS_ENV, "yes")
    with pytest.raises(ValueError) as error:
        location([make_recipe(ticket_lines(4))])
    assert str(error.value) == (
        "$NOVA_EVAL_DATASET_SENSOR = 'yes' is not allowed; allowed: stopped, running "
        "(unset: stopped)"
    )
