"""The command line's pure parts: reading records, server-sent events,
profiles and exit codes."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from datapolis_cli.config import load_profile, save_profile
from datapolis_cli.errors import ExitCode, exit_code_for_status
from datapolis_cli.records import batches, column_types, read_lines
from datapolis_cli.sse import parse


def test_csv_cells_take_the_schemas_types_and_dotted_columns_nest() -> None:
    schema = {
        "properties": {
            "kwh": {"type": "number"},
            "count": {"type": "integer"},
            "ok": {"type": "boolean"},
            "postcode": {"type": "string"},
            "address": {"type": "object", "properties": {"floor": {"type": "integer"}}},
        }
    }
    text = "kwh,count,ok,postcode,address.floor,note\n1.5,3,true,01234,2,\n"
    (line,) = read_lines(io.StringIO(text), "csv", column_types(schema))
    assert line == (
        b'{"kwh": 1.5, "count": 3, "ok": true, "postcode": "01234", "address": {"floor": 2}}'
    )


def test_ndjson_lines_go_as_they_are_and_batches_keep_positions() -> None:
    lines = list(read_lines(io.StringIO('{"a": 1}\n\n{"b" :2}\nnot json\n'), "ndjson", {}))
    assert lines == [b'{"a": 1}', b'{"b" :2}', b"not json"]
    cut = list(batches(iter(lines), 2))
    assert [(b.index, b.first, len(b.lines)) for b in cut] == [(0, 0, 2), (1, 2, 1)]


def test_a_batchs_idempotency_key_is_stable_and_content_bound() -> None:
    (first,) = batches(iter([b'{"a": 1}']), 10)
    (same,) = batches(iter([b'{"a": 1}']), 10)
    (other,) = batches(iter([b'{"a": 2}']), 10)
    assert first.idempotency_key("s", None) == same.idempotency_key("s", None)
    assert first.idempotency_key("s", None) != other.idempotency_key("s", None)
    assert first.idempotency_key("s", None) != first.idempotency_key("t", None)


def test_server_sent_events_are_parsed_with_ids_and_comments_skipped() -> None:
    stream = [": ping", "", "id: 0:18,1:7", "event: record", 'data: {"a":', "data: 1}", "",
              "event: end", 'data: {"reason": "no-active-agreement"}', ""]  # fmt: skip
    events = list(parse(stream))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("record", '{"a":\n1}', "0:18,1:7"),
        ("end", '{"reason": "no-active-agreement"}', "0:18,1:7"),
    ]


def test_profiles_file_is_private_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAPOLIS_CONFIG", str(tmp_path / "d" / "config.toml"))
    for name in ("PROFILE", "API_KEY", "CATALOG_URL", "SUBJECT_TOKEN"):
        monkeypatch.delenv(f"DATAPOLIS_{name}", raising=False)
    assert load_profile().catalog_url == "http://127.0.0.1:8001"
    stored = load_profile("city")
    path = save_profile(
        type(stored)(name="city", api_key="dpk_x", catalog_url="https://c.example"),
        make_default=True,
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_profile().api_key == "dpk_x"
    assert load_profile().catalog_url == "https://c.example"
    monkeypatch.setenv("DATAPOLIS_CATALOG_URL", "http://env.example")
    assert load_profile().catalog_url == "http://env.example"
    assert load_profile("other").api_key is None


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, ExitCode.AUTH), (403, ExitCode.AUTH), (404, ExitCode.NOT_FOUND),
     (409, ExitCode.CONFLICT), (422, ExitCode.INVALID), (400, ExitCode.INVALID),
     (503, ExitCode.UNAVAILABLE), (500, ExitCode.OTHER)],
)  # fmt: skip
def test_http_statuses_map_to_documented_exit_codes(status: int, code: ExitCode) -> None:
    assert exit_code_for_status(status) == code
