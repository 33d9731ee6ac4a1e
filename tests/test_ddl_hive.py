"""Every generated CREATE EXTERNAL TABLE statement parses in sqlglot's `athena` and `hive`
dialects (Athena runs this DDL through its Hive parser), and what the parser reads back is
what was meant: each column comment (some with apostrophes), the table comment, the
location and every table property, with hyphenated and dotted run names in the projection."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from nova_eval_assets.tables.ddl import DdlSettings, create_table, hive_string, statements
from nova_eval_assets.tables.schemas import TABLES, comment

NAMES = ("judge-support-tickets", "support_tickets", "v1.2-run_3")
SETTINGS = DdlSettings(
    database="nova_eval", location="s3://my-bucket/nova-eval/tables", eval_names=NAMES
)


def parsed(statement: str, dialect: str) -> exp.Create:
    tree = sqlglot.parse_one(statement, read=dialect)
    assert isinstance(tree, exp.Create)
    return tree


def column_comments(tree: exp.Create) -> dict[str, str]:
    found = {}
    for column in tree.find_all(exp.ColumnDef):
        constraint = column.find(exp.CommentColumnConstraint)
        if constraint is not None:
            found[column.name] = constraint.this.this
    return found


def properties(tree: exp.Create) -> dict[str, str]:
    found = {}
    for prop in tree.args["properties"].expressions:
        if type(prop) is exp.Property:
            found[prop.name] = prop.args["value"].this
    return found


@pytest.mark.parametrize("dialect", ["athena", "hive"])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_statement_parses_and_reads_back_as_meant(table, dialect):
    tree = parsed(create_table(table, SETTINGS), dialect)
    spec = TABLES[table]
    assert column_comments(tree) == {f.name: comment(f) for f in spec.schema}
    assert tree.find(exp.SchemaCommentProperty).name == spec.description
    location = f"s3://my-bucket/nova-eval/tables/{table}/"
    assert tree.find(exp.LocationProperty).name == location
    props = properties(tree)
    assert props["projection.eval_name.values"] == ",".join(NAMES)
    assert props["storage.location.template"] == (
        location + "eval_name=${eval_name}/run_date=${run_date}/"
    )
    assert props["projection.run_date.range"] == "2024-01-01,NOW"


def test_the_schema_comments_do_hold_apostrophes():
    # the case the issue saw fail: at least one comment with a quote in each big table
    quoted = [f.name for f in TABLES["eval_examples"].schema if "'" in comment(f)]
    assert quoted, "no comment with an apostrophe left to test"
    assert any("'" in comment(f) for f in TABLES["eval_metrics"].schema)


@pytest.mark.parametrize("dialect", ["athena", "hive"])
def test_hive_string_round_trips_quotes_backslashes_and_newlines(dialect):
    text = "the run's \\ path\n'all', or '<field>=<value>'\t\"x\""
    tree = sqlglot.parse_one(
        f"CREATE EXTERNAL TABLE t (a string COMMENT {hive_string(text)}) LOCATION 's3://b/t/'",
        read=dialect,
    )
    assert column_comments(tree) == {"a": text}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("eval_names", ("ok", "bad',x"), "cannot be projected"),
        ("eval_names", ("a,b",), "cannot be projected"),
        ("eval_names", ("${x}",), "cannot be projected"),
        ("location", "s3://b/t' LOCATION 's3://other", "an s3:// prefix without"),
        ("location", "/local/folder", "an s3:// prefix without"),
        ("database", "db`; DROP", "letters, digits and _ only"),
        ("projection_start", "2024-01-01' x", "yyyy-MM-dd"),
    ],
)
def test_names_that_could_break_out_of_a_literal_are_refused(field, value, expected):
    values = {
        "database": "nova_eval",
        "location": "s3://b/tables",
        "eval_names": ("ok",),
        field: value,
    }
    with pytest.raises(ValueError, match=expected):
        DdlSettings(**values)


def test_statements_cover_every_table():
    assert set(statements(SETTINGS)) == set(TABLES)
