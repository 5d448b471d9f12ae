"""Backfill from files, then read the events/ Delta table with real external readers:
deltalake (delta-rs), and DuckDB and pyarrow over its Arrow dataset.

The backfill runs the same pipeline and exactly-once protocol as Kafka ingestion (each
commit records the next line of the file as its `txn` version), so a re-run must not
duplicate anything, and bad lines must land in the rejects file."""
import datetime as dt
import json
import os

import duckdb
import pyarrow as pa
import pytest
from conftest import FIXTURES, events_table, run

N_GOOD = 300
BAD_LINES = {17: '{"MaHoSo": "X", "TrangThaiHoSo": ', 120: '{"MaHoSo": "Y", "TrangThaiHoSo": 42, "NgayTiepNhan": "20230301080000"}', 250: "not json at all"}


def record(i):
    day = 1 + i % 28
    return {
        "MaHoSo": f" 000.00.{10 + i % 4}.h55-2303{day:02}-{i:04} ",
        "MaTTHC": "1.001193",
        "TenTTHC": "Đăng ký khai sinh",
        "DonViXuLy": f"000.00.{10 + i % 4}.H55",
        "KenhThucHien": 2 if i % 3 == 0 else 1,
        "ChuHoSo": "Nguyễn Văn An",
        "SoGiayToChuHoSo": f"0821{i:08d}",
        "NgayTiepNhan": f"202303{day:02}{7 + i % 12:02d}0000",
        "NgayHenTra": f"202303{day:02}170000",
        "TrangThaiHoSo": 2,
        "TaiLieuNop": [{"IsDeleted": False, "DuongDanTaiTepTin": f"https://f.example.invalid/{i}", "DuocSoHoa": i % 2}],
    }


def events(out):
    """A DuckDB connection where `events` is the table's newest snapshot."""
    con = duckdb.connect()
    con.register("events", events_table(out).to_pyarrow_dataset())
    return con


def scalar(out, sql):
    """The one value a query over `events` returns."""
    return events(out).execute(sql).fetchall()[0][0]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, sohoa):
    work = tmp_path_factory.mktemp("backfill")
    export = work / "export.jsonl"
    lines, good = [], 0
    for n in range(N_GOOD + len(BAD_LINES)):
        if n in BAD_LINES:
            lines.append(BAD_LINES[n])
        else:
            lines.append(json.dumps(record(good), ensure_ascii=False))
            good += 1
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = work / "data"
    env = dict(os.environ, SOHOA__PRIVACY__DEVELOPMENT_MODE="true", SOHOA__HTTP__LISTEN="")
    first = run([sohoa, "ingest", "--from-file", str(export), "--out", str(out)], env=env)
    second = run([sohoa, "ingest", "--from-file", str(export), "--out", str(out)], env=env)
    return out, first, second


def test_backfill_summary_and_rejects(loaded):
    out, first, _ = loaded
    assert first.returncode == 0, first.stderr
    assert f"{N_GOOD + 3} messages, {N_GOOD} events written" in first.stderr
    assert "3 messages rejected" in first.stderr
    # One rejects file per committed range, under the file's partition.
    files = sorted((out / "_sohoa/rejects").glob("*/p00000/*.jsonl"))
    assert files, "rejects are committed with their range"
    rejects = [json.loads(l) for f in files for l in f.read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [18, 121, 251]
    by_line = {r["line"]: r for r in rejects}
    assert by_line[121]["errors"] == ["TrangThaiHoSo: 42 is not a status code (1 to 10)"]
    assert by_line[251]["excerpt"] == "not json at all"
    assert by_line[251]["bytes"] == len("not json at all")
    assert "raw" not in by_line[251], "raw bytes stay out of the storage root"


def test_rerun_does_not_duplicate(loaded):
    out, _, second = loaded
    assert second.returncode == 0, second.stderr
    assert "0 events written" in second.stderr
    assert "already loaded before, skipped" in second.stderr
    assert scalar(out, "SELECT count(*) FROM events") == N_GOOD
    # The table records the whole file as read, and the re-run committed nothing.
    table = events_table(out)
    topic = scalar(out, "SELECT DISTINCT source_topic FROM events")
    assert table.transaction_version(topic) == N_GOOD + len(BAD_LINES)
    assert [h["operation"] for h in table.history()].count("WRITE") >= 1
    assert all(h["operation"] in ("WRITE", "CREATE TABLE") for h in table.history())


def test_duckdb_reads_the_table_with_the_same_values(loaded):
    out, _, _ = loaded
    con = events(out)
    rows = con.sql(
        """SELECT dossier_code, agency_code, channel, status, status_code, received_at,
                  "date", has_digitized_component, source_topic, source_offset
           FROM events ORDER BY source_offset"""
    ).fetchall()
    assert len(rows) == N_GOOD
    assert len({r[0] for r in rows}) == N_GOOD
    # The first good record, as written: code trimmed and upper-cased, Vietnam time -> UTC.
    code, agency, channel, status, status_code, received, date, digitized, topic, offset = rows[0]
    assert code == "000.00.10.H55-230301-0000"
    assert (agency, channel, status, status_code, digitized) == ("000.00.10.H55", "online", "received", 2, False)
    assert received == dt.datetime(2023, 3, 1, 0, 0, tzinfo=dt.timezone.utc)  # 07:00 at UTC+7
    assert date == dt.date(2023, 3, 1)
    assert topic.startswith("file:export.jsonl#") and offset == 0
    # The date partition is the Vietnam-local date of the event time, for every row.
    mismatched = scalar(out, "SELECT count(*) FROM events "
                             "WHERE CAST(timezone('UTC', event_time) + INTERVAL 7 HOUR AS DATE) <> \"date\"")
    assert mismatched == 0
    online = scalar(out, "SELECT count(*) FROM events WHERE channel = 'online'")
    assert online == sum(1 for i in range(N_GOOD) if i % 3 == 0)
    # No personal data anywhere in the files.
    names = scalar(out, "SELECT count(*) FROM events WHERE applicant_pseudonym LIKE '0821%'")
    assert names == 0


def test_pyarrow_sees_the_schema_and_its_documentation(loaded):
    out, _, _ = loaded
    table = events_table(out).to_pyarrow_dataset().to_table()
    assert table.num_rows == N_GOOD
    schema = table.schema
    utc = pa.timestamp("us", tz="UTC")
    assert schema.field("event_time").type == utc
    assert schema.field("status_code").type == pa.int8()
    supplements = schema.field("supplements").type
    assert pa.types.is_list(supplements) and supplements.value_type.field("requested_at").type == utc
    assert b"description" in schema.field("dossier_code").metadata
    # The partition column is a Delta date, not a string of the folder name.
    assert schema.field("date").type == pa.date32()
    assert events_table(out).metadata().partition_columns == ["date"]


def test_an_envelope_file_is_one_message(sohoa, tmp_path):
    env = dict(os.environ, SOHOA__PRIVACY__DEVELOPMENT_MODE="true", SOHOA__HTTP__LISTEN="")
    p = run([sohoa, "ingest", "--from-file", str(FIXTURES / "dvcqg/samples-envelope.json"), "--out", str(tmp_path)], env=env)
    assert p.returncode == 0, p.stderr
    assert "1 messages, 3 events written" in p.stderr
    codes = sorted(r[0] for r in events(tmp_path).execute("SELECT dossier_code FROM events").fetchall())
    assert codes == ["000.00.12.H55-230223-0001", "000.00.12.H55-230301-0107", "000.00.30.H55-230110-0042"]
