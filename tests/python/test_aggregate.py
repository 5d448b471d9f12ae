"""The aggregator checked by independent tools: its metrics by SQL in DuckDB and Spark, its report
in a real headless browser.

A generated feed is backfilled into the events/ Delta table, `sohoa aggregate` writes dossiers/ and
metrics/, and DuckDB runs the SQL that ships for analysts (schemas/sql/metrics.sql) on
dossiers/, handovers/ and metrics/agencies.parquet alone. Every count of every metrics
row, in both views, must match exactly, and the rates must be the counts' quotients
(empty when the denominator is 0). The feed crosses a reorganization: agencies end on a
date, their open dossiers are handed over to successors, and this test derives, from its
own plan and the reference file, who received and who held each dossier and what it
restates to."""
import csv
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import shutil
import tomllib

import duckdb
import pytest
from conftest import ROOT, Dom, events_table, headless, run

AS_OF = "2024-09-15T12:00:00"
AGENCIES = ["000.00.12.H55", "000.00.30.H55", "000.20.31.H55", "000.21.32.H55", "000.22.33.H55"]
# The feed's agency reference (illustrative): a department split on 31 March 2024 (its
# construction dossiers to another department, the rest to a new one), two districts and
# the old province ended on 30 June 2024 (one district shared between two new wards);
# 000.22.33.H55 is missing from it.
REFERENCE = """
[[agencies]]
code = "P0"
name = "Tỉnh cũ"
level = "province"
valid_to = 2024-06-30
successors = ["P1"]

[[agencies]]
code = "P1"
name = "Tỉnh mới"
level = "province"

[[agencies]]
code = "000.00.12.H55"
name = "Sở Xây dựng"
level = "department"
province = "P1"

[[agencies]]
code = "000.00.30.H55"
name = "Sở cũ"
level = "department"
province = "P1"
valid_to = 2024-03-31
successors = [{ code = "000.00.12.H55", fields = ["XD"] }, "000.00.40.H55"]

[[agencies]]
code = "000.00.40.H55"
name = "Sở mới"
level = "department"
province = "P1"
valid_from = 2024-04-01

[[agencies]]
code = "000.20.31.H55"
name = "UBND huyện Một"
level = "district"
province = "P0"
valid_to = 2024-06-30
successors = [{ code = "000.40.01.H55", share = 0.5 }, { code = "000.40.02.H55", share = 0.5 }]

[[agencies]]
code = "000.21.32.H55"
name = "UBND huyện Hai, Khu B"
level = "district"
province = "P1"
valid_to = 2024-06-30
successors = ["000.40.01.H55"]

[[agencies]]
code = "000.40.01.H55"
name = "UBND phường Một"
level = "ward"
province = "P1"
valid_from = 2024-07-01

[[agencies]]
code = "000.40.02.H55"
name = "UBND phường Hai"
level = "ward"
province = "P1"
valid_from = 2024-07-01
"""
REF = {e["code"]: e for e in tomllib.loads(REFERENCE)["agencies"]}
# Today's units the feed restates to: the report ranks them.
UNITS = ["000.00.12.H55", "000.00.40.H55", "000.22.33.H55", "000.40.01.H55", "000.40.02.H55"]
# Who takes over a quarter of each agency's dossiers: a successor of an agency that
# ended, or (for the department that did not end) an agency the reference lacks.
TAKEN_OVER_BY = {"000.20.31.H55": ["000.40.01.H55", "000.40.02.H55"], "000.21.32.H55": ["000.40.01.H55"],
                 "000.00.30.H55": None, "000.00.12.H55": ["000.22.33.H55"]}
PROCEDURES = [
    ("1.001193", "Đăng ký khai sinh"),
    ("1.004227", "Cấp giấy phép xây dựng đối với nhà ở riêng lẻ"),
    ("2.000908", "Chứng thực bản sao từ bản chính"),
    ("1.000656", "Đăng ký thường trú"),
    ("9.999999", "Thủ tục chưa có trong danh mục"),
]
# The field (MaLinhVuc, TenLinhVuc) of each procedure; the last one's field is unknown.
FIELDS = {"1.001193": ("HTTP", "Hộ tịch"), "1.004227": ("XD", "Xây dựng"), "2.000908": ("CT", "Chứng thực"),
          "1.000656": ("CTRU", "Cư trú")}
COUNTS = ["received", "online_received", "ontime_total", "early", "on_time", "late",
          "in_progress_in_time", "in_progress_overdue", "digitized", "e_result_eligible",
          "e_result", "reused", "fee_bearing", "paid_online"]
RATES = {
    "online_rate": ("online_received", "received"),
    "on_time_rate": (None, "ontime_total"),
    "digitization_rate": ("digitized", "received"),
    "e_result_rate": ("e_result", "e_result_eligible"),
    "reuse_rate": ("reused", "received"),
    "online_payment_rate": ("paid_online", "fee_bearing"),
}


def fmt(t):
    return t.strftime("%Y%m%d%H%M%S")


def record(i, rnd):
    # Up to two days before the judging moment, so some dossiers are still in time then.
    received = dt.datetime(2024, 1, 2, 7, 0) + dt.timedelta(hours=rnd.randrange(24 * 255))
    code, name = rnd.choice(PROCEDURES)
    r = {
        "MaHoSo": f"H55-{i:06d}",
        "MaTTHC": code,
        "TenTTHC": name,
        "DonViXuLy": rnd.choice(AGENCIES),
        "KenhThucHien": rnd.choice([1, 2, 2, 3, None]),
        "NgayTiepNhan": fmt(received),
        "TrangThaiHoSo": 4,
        "HoSoCoThanhPhanSoHoa": rnd.randrange(2),
        "DuocThanhToanTrucTuyen": rnd.randrange(3),
        "TaiLieuNop": [{"IsDeleted": False, "DuongDanTaiTepTin": "https://f.example.invalid/x" if rnd.random() < 0.8 else None, "DuocTaiSuDung": rnd.randrange(2)}],
        "DanhSachLePhi": [{"Gia": rnd.choice([0, 0, 50000])}],
        "DanhSachGiayToKetQua": [{"TenGiayTo": "KQ", "DuongDanTepTinKetQua": "https://f.example.invalid/r"}] if rnd.random() < 0.6 else [],
    }
    if code in FIELDS:
        r["MaLinhVuc"] = FIELDS[code][0]
        if rnd.random() < 0.7:
            r["TenLinhVuc"] = FIELDS[code][1]
    due = received + dt.timedelta(days=rnd.randrange(1, 12), hours=rnd.randrange(8))
    if rnd.random() < 0.85:
        r["NgayHenTra"] = fmt(due)
    fate = rnd.randrange(10)
    end = received + dt.timedelta(hours=rnd.randrange(24 * 20))
    if fate == 0:
        r["TrangThaiHoSo"] = rnd.choice([1, 3])
    elif fate == 1:
        # Withdrawn by the applicant, or stopped (refused) by the agency.
        r["TrangThaiHoSo"] = rnd.choice([7, 8])
        if r["TrangThaiHoSo"] == 8:
            r["NgayTuChoi"] = fmt(min(end, dt.datetime.fromisoformat(AS_OF)))
    elif fate in (2, 3):
        asked = received + dt.timedelta(hours=rnd.randrange(1, 30))
        sups = [{"NgayBoSung": fmt(asked)}]
        if rnd.random() < 0.7:
            sups[0]["NgayTiepNhanBoSung"] = fmt(asked + dt.timedelta(days=rnd.randrange(1, 6)))
            if rnd.random() < 0.5 and "NgayHenTra" in r:
                sups[0]["NgayHenTraMoi"] = r["NgayHenTra"]
            if rnd.random() < 0.3:
                sups.append({"NgayBoSung": fmt(asked + dt.timedelta(days=7)), "NgayTiepNhanBoSung": fmt(asked + dt.timedelta(days=8))})
            r["NgayKetThucXuLy"] = fmt(end + dt.timedelta(days=3))
            r["TrangThaiHoSo"] = 9
        else:
            r["TrangThaiHoSo"] = 5
        r["DanhSachHoSoBoSung"] = sups
    elif fate in (4, 5, 6, 7):
        r["NgayKetThucXuLy"] = fmt(end)
        r["NgayTra"] = fmt(end + dt.timedelta(hours=3))
        r["TrangThaiHoSo"] = 10
    # Only what had happened by the judging moment is in the feed.
    limit = fmt(dt.datetime.fromisoformat(AS_OF))
    for k in ("NgayKetThucXuLy", "NgayTra"):
        if r.get(k, "0") > limit:
            del r[k]
            r["TrangThaiHoSo"] = 4
    return r


def handed_over(i, r):
    """The records of dossier `i` in the feed: the record itself, or, for a quarter of the
    dossiers of the agencies in TAKEN_OVER_BY, the first agency's snapshot at receipt and
    then the whole record under the agency that took it over. Returns (records, the
    agency that took over or None)."""
    old = r["DonViXuLy"]
    if old not in TAKEN_OVER_BY or i % 4 != 0 or r["TrangThaiHoSo"] in (1, 3):
        return [r], None
    new = TAKEN_OVER_BY[old]
    # The split department sends construction (XD) to one successor, the rest to another.
    new = ("000.00.12.H55" if r.get("MaLinhVuc") == "XD" else "000.00.40.H55") if new is None else new[i % len(new)]
    first = {k: r[k] for k in ("MaHoSo", "MaTTHC", "TenTTHC", "DonViXuLy", "KenhThucHien", "NgayTiepNhan")}
    first["TrangThaiHoSo"] = 4
    for k in ("NgayHenTra", "MaLinhVuc"):
        if k in r:
            first[k] = r[k]
    return [first, dict(r, DonViXuLy=new)], new


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory, sohoa):
    work = tmp_path_factory.mktemp("aggregate")
    rnd = random.Random(766)
    export = work / "export.jsonl"
    lines, plan = [], {}
    for i in range(3000):
        records, new = handed_over(i, record(i, rnd))
        lines += [json.dumps(x, ensure_ascii=False) for x in records]
        plan[records[0]["MaHoSo"]] = (records[0], records[-1], new)
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reference = work / "agencies.toml"
    reference.write_text(REFERENCE, encoding="utf-8")
    out = work / "data"
    env = dict(os.environ, SOHOA__PRIVACY__DEVELOPMENT_MODE="true", SOHOA__HTTP__LISTEN="", NO_COLOR="1",
               SOHOA__AGGREGATE__AGENCIES=str(reference), SOHOA__AGGREGATE__PROVINCE="P1")
    ingest = run([sohoa, "ingest", "--from-file", str(export), "--out", str(out)], env=env)
    assert ingest.returncode == 0, ingest.stderr
    agg = run([sohoa, "aggregate", "--root", str(out), "--as-of", AS_OF], env=env)
    assert agg.returncode == 0, agg.stderr
    return out, agg, env, len(lines), plan


PROGRESS = ["carried_over", "received", "received_in_person", "received_online", "received_postal",
            "received_other", "transferred_in", "resolved_early", "resolved_on_time", "resolved_late", "withdrawn",
            "stopped_or_refused", "transferred_out", "in_progress_in_time", "in_progress_overdue"]
# The SQL's name for each progress column.
PROGRESS_SQL = dict(zip(PROGRESS, PROGRESS), received="judged_received", resolved_early="early",
                    resolved_on_time="on_time", resolved_late="late")


def key_of(r):
    """A row's key: view, period, start, province, agency, procedure, field."""
    start = r["period_start"] if isinstance(r["period_start"], str) else r["period_start"].isoformat()
    return (r["view"], r["period"], start, r["province_code"] or "", r["agency_code"] or "",
            r["procedure_code"] or "", r["field_code"] or "")


@pytest.fixture(scope="module")
def sql_rows(aggregated):
    """The shipped SQL run by DuckDB on dossiers/, handovers/ and metrics/ alone."""
    out = aggregated[0]
    con = duckdb.connect()
    con.execute(f"CREATE VIEW dossiers AS SELECT * FROM read_parquet('{out}/dossiers/*.parquet')")
    con.execute(f"CREATE VIEW handovers AS SELECT * FROM read_parquet('{out}/handovers/*.parquet')")
    con.execute(f"CREATE VIEW agencies AS SELECT * FROM read_parquet('{out}/metrics/agencies.parquet')")
    con.execute(f"CREATE VIEW periods AS SELECT * FROM read_parquet('{out}/metrics/periods.parquet')")
    sql = (ROOT / "schemas" / "sql" / "metrics.sql").read_text()
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    rows = {}
    for row in cur.fetchall():
        r = dict(zip(names, row))
        key = key_of(r)
        assert key not in rows, key
        rows[key] = r
    return rows


def test_the_shipped_sql_reproduces_every_metric_row(aggregated, sql_rows):
    out = aggregated[0]
    expected = {k: {c: int(r[c]) for c in COUNTS} for k, r in sql_rows.items() if r["metrics_row"]}
    with open(out / "metrics" / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    got = {key_of(r): r for r in rows}
    assert len(got) == len(rows)
    assert set(got) == set(expected)
    assert len(rows) > 1000
    for key, want in expected.items():
        r = got[key]
        assert {c: int(r[c]) for c in COUNTS} == want, key
        for rate, (num, den) in RATES.items():
            n = want["early"] + want["on_time"] + want["in_progress_in_time"] if num is None else want[num]
            if want[den] == 0:
                assert r[rate] == "", (key, rate)
            else:
                assert float(r[rate]) == pytest.approx(n / want[den], rel=1e-12), (key, rate)
    # Every field rolls up within each agency and across a province's agencies (unknown:
    # "(none)"), the fields of a period add up to the province, and names come from
    # TenLinhVuc.
    fields = {k[6] for k in got if k[6]}
    assert fields == {"HTTP", "XD", "CT", "CTRU", "(none)"}
    for province_key in {k[:4] for k in got}:
        across = [got[k] for k in got if k[:4] == province_key and k[4] == "" and k[6]]
        province = got.get(province_key + ("", "", ""))
        if province is None:
            continue
        for c in COUNTS:
            assert sum(int(r[c]) for r in across) == int(province[c]), (province_key, c)
    year = ("year", "2024-01-01")
    assert got[("restated",) + year + ("P1", "", "", "XD")]["field_name"] == "Xây dựng"
    assert got[("restated",) + year + ("P1", "", "", "(none)")]["field_name"] == ""
    # The feed exercises every class, and open dossiers judged at past period ends.
    total = got[("restated",) + year + ("P1", "", "", "")]
    for c in ["early", "on_time", "late", "in_progress_in_time", "in_progress_overdue"]:
        assert int(total[c]) > 0, c
    # As it was, the old province (one district) has its own row up to its end, and the
    # provinces add up to the restated one in every period, every count. Names everywhere.
    assert got[("as_was",) + year + ("P0", "", "", "")]["province_name"] == "Tỉnh cũ"
    for period_key in {k[1:3] for k in got}:
        was = [got[k] for k in got if k[0] == "as_was" and k[1:3] == period_key and k[4:] == ("", "", "")]
        now = [got[k] for k in got if k[0] == "restated" and k[1:3] == period_key and k[4:] == ("", "", "")]
        assert len(now) == 1 and now[0]["province_name"] == "Tỉnh mới", period_key
        for c in COUNTS:
            assert sum(int(r[c]) for r in was) == int(now[0][c]), (period_key, c)
    assert got[("as_was",) + year + ("P0", "000.20.31.H55", "", "")]["agency_name"] == "UBND huyện Một"
    assert got[("restated",) + year + ("P1", "000.40.01.H55", "", "")]["agency_name"] == "UBND phường Một"
    # The agency the reference lacks is counted under the configured province, unnamed.
    unknown = got[("as_was",) + year + ("P1", "000.22.33.H55", "", "")]
    assert int(unknown["received"]) > 0 and unknown["agency_name"] == ""


def test_spark_runs_the_shipped_sql_unchanged_and_agrees(aggregated, sql_rows):
    """Spark SQL (PySpark, local[2]) runs schemas/sql/metrics.sql as it ships, on the same
    inputs: every row and every column equals DuckDB's, and every count of metrics.csv."""
    from pyspark.sql import SparkSession

    out = aggregated[0]
    spark = (SparkSession.builder.master("local[2]").appName("sohoa-metrics-sql")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.sql.session.timeZone", "UTC")
             .getOrCreate())
    try:
        for view, path in [("dossiers", out / "dossiers"), ("handovers", out / "handovers"),
                           ("agencies", out / "metrics" / "agencies.parquet"),
                           ("periods", out / "metrics" / "periods.parquet")]:
            files = sorted(str(f) for f in path.glob("*.parquet")) if path.is_dir() else [str(path)]
            assert files, path
            spark.read.parquet(*files).createOrReplaceTempView(view)
        sql = (ROOT / "schemas" / "sql" / "metrics.sql").read_text()
        rows = [r.asDict() for r in spark.sql(sql).collect()]
    finally:
        spark.stop()
    got = {key_of(r): r for r in rows}
    assert len(got) == len(rows) > 1000
    assert set(got) == set(sql_rows)
    for key, want in sql_rows.items():
        have = got[key]
        assert set(have) == set(want), key
        for column, value in want.items():
            assert have[column] == value, (key, column, have[column], value)
    with open(out / "metrics" / "metrics.csv", newline="", encoding="utf-8") as f:
        csv_rows = {key_of(r): r for r in csv.DictReader(f)}
    spark_metrics = {k: r for k, r in got.items() if r["metrics_row"]}
    assert set(spark_metrics) == set(csv_rows)
    for key, r in spark_metrics.items():
        assert {c: int(r[c]) for c in COUNTS} == {c: int(csv_rows[key][c]) for c in COUNTS}, key


def test_the_shipped_sql_reproduces_every_progress_row(aggregated, sql_rows):
    out = aggregated[0]
    expected = {k: {c: int(r[PROGRESS_SQL[c]]) for c in PROGRESS} for k, r in sql_rows.items() if r["progress_row"]}
    with open(out / "metrics" / "progress.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["period", "period_start", "period_label", "view", "province_code", "province_name",
                             "agency_code", "agency_name", "procedure_code", "field_code", "field_name"] \
        + PROGRESS + ["on_time_rate"]
    got = {key_of(r): r for r in rows}
    assert len(got) == len(rows)
    assert set(got) == set(expected)
    for key, want in expected.items():
        r = got[key]
        assert {c: int(r[c]) for c in PROGRESS} == want, key
        # The report form's identity, and the on-time rate over resolved plus open.
        ended = want["resolved_early"] + want["resolved_on_time"] + want["resolved_late"]
        open_ = want["in_progress_in_time"] + want["in_progress_overdue"]
        assert want["carried_over"] + want["received"] + want["transferred_in"] == \
            ended + want["withdrawn"] + want["stopped_or_refused"] + want["transferred_out"] + open_
        if ended + open_ == 0:
            assert r["on_time_rate"] == "", key
        else:
            ok = want["resolved_early"] + want["resolved_on_time"] + want["in_progress_in_time"]
            assert float(r["on_time_rate"]) == pytest.approx(ok / (ended + open_), rel=1e-12), key
    # A period's carried over is the previous period's in progress, per view, agency,
    # procedure and field, over every period (a period without a row counts zero).
    periods = duckdb.connect().execute(
        f"SELECT period, period_start FROM read_parquet('{out}/metrics/periods.parquet') ORDER BY 1, 2").fetchall()
    for period, starts in itertools.groupby(periods, key=lambda p: p[0]):
        starts = [s.isoformat() for _, s in starts]
        groups = {(k[0],) + k[3:] for k in expected if k[1] == period}
        for g in groups:
            for prev, nxt in zip(starts, starts[1:]):
                before = expected.get((g[0], period, prev) + g[1:])
                after = expected.get((g[0], period, nxt) + g[1:])
                carried = after["carried_over"] if after else 0
                in_progress = before["in_progress_in_time"] + before["in_progress_overdue"] if before else 0
                assert carried == in_progress, (period, nxt, g)
    # The feed exercises the backlog: months with dossiers carried over, and every outcome;
    # handovers as it was, and restated only those to an agency that does not succeed.
    restated = [w for k, w in expected.items() if k[0] == "restated" and k[4:] == ("", "", "")]
    assert sum(w["carried_over"] for w in restated) > 0
    year = expected[("restated", "year", "2024-01-01", "P1", "", "", "")]
    for c in PROGRESS[1:]:
        if c != "received_other":  # the decoder reads a missing channel as in person
            assert year[c] > 0, c
    ward = expected[("as_was", "month", "2024-07-01", "P1", "000.40.01.H55", "", "")]
    assert ward["transferred_in"] > 0 and ward["carried_over"] == 0
    district = expected[("as_was", "month", "2024-07-01", "P0", "000.20.31.H55", "", "")]
    assert district["transferred_out"] > 0


def current(code, field, dossier):
    """The current unit of `code` for a dossier, from the reference file: successors
    followed, a split by the field its successors list, else by share of the first four
    bytes of the dossier code's SHA-256."""
    while code in REF and REF[code].get("successors"):
        succ = [x if isinstance(x, dict) else {"code": x} for x in REF[code]["successors"]]
        by_field = [x for x in succ if field in x.get("fields", [])]
        rest = [x for x in succ if not x.get("fields")]
        if by_field:
            code = by_field[0]["code"]
        elif len(rest) == 1:
            code = rest[0]["code"]
        else:
            bucket = int.from_bytes(hashlib.sha256(dossier.encode()).digest()[:4], "big")
            upper = 0.0
            for x in rest:
                upper += x["share"]
                if bucket < upper * 2 ** 32:
                    code = x["code"]
                    break
            else:
                code = rest[-1]["code"]
    return code


def succeeds(old, new):
    succ = [x if isinstance(x, str) else x["code"] for x in REF.get(old, {}).get("successors", [])]
    return new in succ or any(succeeds(s, new) for s in succ)


def vn_time(s):
    return dt.datetime.strptime(s, "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone(dt.timedelta(hours=7)))


def test_who_received_and_who_held_each_dossier_follow_the_plan(aggregated):
    """dossiers/ and handovers/ against this test's own plan: the receiving agency keeps
    the dossier until the handover, dated when an ended agency ended (a sync record has no
    time of its own) or, to an agency that does not succeed it, by its snapshot's latest
    date; a handover after the clock's end moves nothing; restated codes follow the
    reference file, a stay left along a successor line taking the unit it went to."""
    out, _, _, _, plan = aggregated
    con = duckdb.connect()
    cols = ("dossier_code, receiving_agency_code, agency_code, restated_receiving_agency_code, "
            "restated_agency_code, handovers, end_at, received_at, field_code")
    dossiers = {r[0]: r for r in con.execute(f"SELECT {cols} FROM read_parquet('{out}/dossiers/*.parquet')").fetchall()}
    moves = {r[0]: r for r in con.execute(
        f"SELECT dossier_code, handover_seq, handed_over_at, handed_over_date, from_agency_code, to_agency_code, "
        f"restated_from_agency_code, restated_to_agency_code, along_successor_line "
        f"FROM read_parquet('{out}/handovers/*.parquet')").fetchall()}
    assert len(dossiers) == 3000
    kept = dropped = along = 0
    for code, (first, last, new) in plan.items():
        d = dossiers[code]
        old = first["DonViXuLy"]
        field = first.get("MaLinhVuc", "").upper() or None
        assert d[1] == old, code
        if new is None:
            assert d[2] == old and d[5] == 0 and code not in moves, code
            assert d[3] == d[4] == current(old, field, code), code
            continue
        is_along = succeeds(old, new)
        if is_along:
            ended = dt.date.fromisoformat(str(REF[old]["valid_to"])) + dt.timedelta(days=1)
            at = dt.datetime.combine(ended, dt.time(), tzinfo=dt.timezone(dt.timedelta(hours=7)))
        else:
            dates = [last[k] for k in ("NgayTiepNhan", "NgayKetThucXuLy", "NgayTra", "NgayTuChoi") if k in last]
            dates += [x[k] for x in last.get("DanhSachHoSoBoSung", []) for k in ("NgayBoSung", "NgayTiepNhanBoSung")
                      if k in x]
            at = max(vn_time(x) for x in dates)
        at = max(at, vn_time(first["NgayTiepNhan"]))
        if d[6] is not None and at > d[6]:
            # Handed over after the clock's end: the end was the first agency's.
            assert (d[2], d[5]) == (old, 0) and code not in moves, code
            assert d[3] == d[4] == current(old, field, code), code
            dropped += 1
            continue
        kept += 1
        along += is_along
        assert (d[2], d[5]) == (new, 1), code
        m = moves[code]
        local = at.astimezone(dt.timezone(dt.timedelta(hours=7)))
        assert (m[1], m[2], m[3], m[4], m[5], m[8]) == (0, at, max(local.date(), d[7].astimezone(local.tzinfo).date()),
                                                       old, new, is_along), code
        unit = current(new, field, code)
        before = unit if is_along else current(old, field, code)
        assert (d[3], d[4], m[6], m[7]) == (before, unit, before, unit), code
    # The plan exercises every case.
    assert kept > 50 and dropped > 20 and 0 < along < kept, (kept, dropped, along)


def test_analysts_query_dossiers_directly(aggregated):
    out, agg, _, _, _ = aggregated
    con = duckdb.connect()
    n, judged, units = con.execute(
        f"SELECT count(*), count(on_time_class), count(DISTINCT restated_agency_code) "
        f"FROM read_parquet('{out}/dossiers/*.parquet')"
    ).fetchall()[0]
    assert n == 3000
    assert 2000 < judged < 3000
    # Today's units: the department, its new neighbour, the two wards, and the code the
    # reference lacks.
    assert units == 5
    # The terminal summary names every current unit (the one the reference lacks by code)
    # and the province.
    for name in ["Sở Xây dựng", "Sở mới", "UBND phường Một", "UBND phường Hai", "000.22.33.H55", "Tỉnh mới"]:
        assert name in agg.stdout, name


def test_the_report_renders_in_a_real_browser_with_its_charts(aggregated, tmp_path):
    out = aggregated[0]
    page = out / "report" / "index.html"
    assert "http://" not in page.read_text() and "https://" not in page.read_text(), "works offline"
    dump = headless("--dump-dom", page.as_uri(), tmp=tmp_path / "profile")
    assert dump.returncode == 0, dump.stderr
    dom = Dom()
    dom.feed(dump.stdout)
    ids = {a.get("id") for _, a, _ in dom.elements}
    for figure in ["progress", "ranking-ontime", "ranking-digitization", "fields-ontime", "fields-digitization",
                   "trend-monthly", "worst-procedures", "scorecard"]:
        assert figure in ids, figure
    # The progress report form: one row per current unit, then the province.
    rows = [a for t, a, inside in dom.elements if t == "tr" and "data-code" in a and "progress" in inside]
    assert [a["data-code"] for a in rows] == sorted(UNITS) + [""]
    # The fields ranked by each rate, lowest first: the four named fields and "(none)".
    for figure in ["fields-ontime", "fields-digitization"]:
        rows = [a for t, a, inside in dom.elements if t == "tr" and "field-row" in a.get("class", "") and figure in inside]
        assert len(rows) == 5, figure
        rates = [float(a["data-rate"]) for a in rows]
        assert rates == sorted(rates)
    # One bar per agency in each ranking, best first.
    for figure in ["ranking-ontime", "ranking-digitization"]:
        rows = [a for t, a, inside in dom.elements if t == "g" and "bar-row" in a.get("class", "") and figure in inside]
        assert len(rows) == len(UNITS), figure
        rates = [float(a["data-rate"]) for a in rows]
        assert rates == sorted(rates, reverse=True)
        bars = [a for t, a, inside in dom.elements if t == "rect" and "bar" in a.get("class", "").split() and figure in inside]
        assert len(bars) == len(UNITS)
    # The monthly trend has a point per month with data (January to September).
    points = {a["data-month"] for t, a, inside in dom.elements if t == "circle" and "pt-ontime" in a.get("class", "")}
    assert len(points) == 9, points
    # And it paints: a screenshot of the page is not blank.
    shot = tmp_path / "report.png"
    r = headless(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri(), tmp=tmp_path / "profile2")
    assert r.returncode == 0, r.stderr
    assert shot.stat().st_size > 30_000


def test_run_results_for_the_textfile_collector(aggregated, sohoa, tmp_path):
    out, _, env, events, _ = aggregated
    prom = tmp_path / "sohoa_aggregate.prom"
    r = run([sohoa, "aggregate", "--root", str(out), "--as-of", AS_OF, "--no-report", "--metrics-textfile", str(prom)],
            env=env)
    assert r.returncode == 0, r.stderr
    values = {l.split()[0]: float(l.split()[1]) for l in prom.read_text().splitlines() if not l.startswith("#")}
    assert values["sohoa_aggregate_dossiers"] == 3000
    assert values["sohoa_aggregate_events_read"] == events
    assert abs(values["sohoa_aggregate_last_success_timestamp_seconds"] - dt.datetime.now().timestamp()) < 120
    # The newest event is on or before the judging moment, in 2024.
    newest = dt.datetime.fromtimestamp(values["sohoa_aggregate_newest_event_timestamp_seconds"], dt.timezone.utc)
    assert newest.year == 2024
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: tests/run installs Debian's prometheus package"
    check = run([promtool, "check", "metrics"], input=prom.read_text())
    assert check.returncode == 0, check.stdout + check.stderr


def scrape(port, path="/metrics"):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return None, ""


def test_continuous_mode_publishes_the_newest_event_it_includes(aggregated, sohoa, tmp_path):
    """`--every`: each run's results on /metrics, and newer events show up in the next run's
    freshness gauge without a restart; SIGTERM stops it with exit 0."""
    import signal
    import socket
    import subprocess
    import time
    src, _, env, events, _ = aggregated
    root = tmp_path / "data"
    shutil.copytree(src / "events", root / "events")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sohoa, "aggregate", "--root", str(root), "--every", "1s", "--no-report",
                             "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def gauges():
        _, body = scrape(port)
        return {l.split()[0]: float(l.split()[1]) for l in body.splitlines() if l and not l.startswith("#")}

    def wait(what, check, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            got = check()
            if got:
                return got
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    try:
        first = wait("a first run", lambda: scrape(port, "/readyz")[0] == 200 and gauges())
        stored = duckdb.connect().from_arrow(events_table(root).to_pyarrow_dataset())
        ((newest_before, rows),) = stored.aggregate("epoch(max(event_time)), count(*)").fetchall()
        assert rows == events
        assert abs(first["sohoa_aggregate_newest_event_timestamp_seconds"] - newest_before) < 1
        assert first["sohoa_aggregate_events_read"] == events
        assert first['sohoa_aggregate_runs_total{outcome="success"}'] >= 1
        # A later dossier arrives while it runs.
        late = {"MaHoSo": "H55-999999", "MaTTHC": PROCEDURES[0][0], "TenTTHC": PROCEDURES[0][1],
                "DonViXuLy": AGENCIES[0], "KenhThucHien": 2, "NgayTiepNhan": "20240916080000", "TrangThaiHoSo": 2}
        export = tmp_path / "late.jsonl"
        export.write_text(json.dumps(late, ensure_ascii=False) + "\n", encoding="utf-8")
        ingest = run([sohoa, "ingest", "--from-file", str(export), "--out", str(root)], env=env)
        assert ingest.returncode == 0, ingest.stderr
        later = wait("the new event in the metrics",
                     lambda: (g := gauges()).get("sohoa_aggregate_events_read") == events + 1 and g)
        # 08:00 in Vietnam is 01:00 UTC.
        expected = dt.datetime(2024, 9, 16, 1, 0, tzinfo=dt.timezone.utc).timestamp()
        assert newest_before < expected
        assert later["sohoa_aggregate_newest_event_timestamp_seconds"] == expected
        assert later['sohoa_aggregate_runs_total{outcome="failure"}'] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, proc.stderr.read()[-3000:]
    with open(root / "metrics" / "metrics.csv", newline="", encoding="utf-8") as f:
        province = [r for r in csv.DictReader(f) if r["period"] == "year" and r["agency_code"] == ""
                    and r["view"] == "restated" and r["procedure_code"] == "" and r["period_start"] == "2024-01-01"]
    assert int(province[0]["received"]) == int(first_received(src)) + 1


def first_received(out):
    with open(out / "metrics" / "metrics.csv", newline="", encoding="utf-8") as f:
        return next(r["received"] for r in csv.DictReader(f) if r["period"] == "year" and r["agency_code"] == ""
                    and r["view"] == "restated" and r["procedure_code"] == "" and r["period_start"] == "2024-01-01")
