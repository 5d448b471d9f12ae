"""The events table against an S3-compatible server: moto in server mode, started by this
test on 127.0.0.1 (a fake of S3 itself, since no real bucket is reachable here). Data files
are plain puts; each Delta log version is a conditional put that fails if the object exists
(the commit point), through object_store's S3 client exactly as against AWS or MinIO. The
table is read back from the bucket by delta-rs (deltalake), an independent reader."""
import csv
import io
import os

import pytest
from conftest import FIXTURES, events_table, run

BUCKET = "sohoa-test"


@pytest.fixture(scope="module")
def s3(moto):
    endpoint, client = moto
    client.create_bucket(Bucket=BUCKET)
    return endpoint, client


def s3_env(endpoint):
    return dict(
        os.environ,
        SOHOA__PRIVACY__DEVELOPMENT_MODE="true",
        SOHOA__HTTP__LISTEN="",
        SOHOA__STORAGE__OPTIONS__AWS_ENDPOINT=endpoint,
        SOHOA__STORAGE__OPTIONS__AWS_ALLOW_HTTP="true",
        SOHOA__STORAGE__OPTIONS__AWS_REGION="us-east-1",
        # Credentials as options, so no credential provider ever looks further.
        SOHOA__STORAGE__OPTIONS__AWS_ACCESS_KEY_ID="test",
        SOHOA__STORAGE__OPTIONS__AWS_SECRET_ACCESS_KEY="test",
    )


def read_options(endpoint):
    """deltalake's options for the bucket: moto's endpoint, over plain HTTP."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def ingest(sohoa, endpoint, tmp_path, fixture):
    env = s3_env(endpoint)
    return run([sohoa, "ingest", "--from-file", str(fixture), "--out", f"s3://{BUCKET}/province"],
               env=env)


def test_backfill_to_s3_is_exactly_once_and_readable(sohoa, s3, tmp_path):
    endpoint, client = s3
    fixture = FIXTURES / "dvcqg" / "samples-envelope.json"
    first = ingest(sohoa, endpoint, tmp_path, fixture)
    assert first.returncode == 0, first.stderr
    assert "3 events written in 3 files" in first.stderr
    again = ingest(sohoa, endpoint, tmp_path, fixture)
    assert again.returncode == 0, again.stderr
    assert "0 events written" in again.stderr

    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="province/")["Contents"])
    data = [k for k in keys if k.startswith("province/events/date=")]
    assert len(data) == 3 and all(k.endswith(".parquet") for k in data)
    # Version 0 creates the table, version 1 is the backfill; the re-run committed nothing.
    log = [k for k in keys if k.startswith("province/events/_delta_log/") and k.endswith(".json")]
    assert log == [f"province/events/_delta_log/{v:020}.json" for v in (0, 1)], log

    table = events_table(f"s3://{BUCKET}/province", storage_options=read_options(endpoint))
    assert table.version() == 1
    assert sorted(table.file_uris()) == [f"s3://{BUCKET}/{k}" for k in data]
    rows = table.to_pyarrow_dataset().to_table()
    assert rows.num_rows == 3
    assert sorted(rows.column("dossier_code").to_pylist()) == [
        "000.00.12.H55-230223-0001", "000.00.12.H55-230301-0107", "000.00.30.H55-230110-0042"]
    # The backfill's progress, under the file's source name: one message (the envelope), line 0 done.
    topics = set(rows.column("source_topic").to_pylist())
    assert len(topics) == 1
    assert table.transaction_version(topics.pop()) == 1


def test_aggregate_reads_and_writes_the_bucket(sohoa, s3, tmp_path):
    endpoint, client = s3
    # Idempotent: the backfill test may have loaded the samples already.
    loaded = ingest(sohoa, endpoint, tmp_path, FIXTURES / "dvcqg" / "samples-envelope.json")
    assert loaded.returncode == 0, loaded.stderr
    agg = run([sohoa, "aggregate", "--root", f"s3://{BUCKET}/province", "--as-of", "2023-12-31"],
              env=s3_env(endpoint))
    assert agg.returncode == 0, agg.stderr
    assert "3 events, 3 dossiers" in agg.stderr
    text = client.get_object(Bucket=BUCKET, Key="province/metrics/metrics.csv")["Body"].read().decode()
    year = [r for r in csv.DictReader(io.StringIO(text)) if r["period_label"] == "2023" and r["view"] == "restated"
            and r["agency_code"] == ""
            and r["procedure_code"] == "" and r["field_code"] == ""]
    assert len(year) == 1 and year[0]["received"] == "3", year
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="province/")["Contents"]}
    assert {"province/dossiers/part-00000-of-00001.parquet", "province/report/index.html",
            "province/metrics/metrics.parquet", "province/metrics/scorecard.csv"} <= keys
