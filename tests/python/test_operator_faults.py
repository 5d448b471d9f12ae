"""Faults an operator meets, injected into the real `sohoa` binary: storage that stops
accepting writes mid-backfill, files that begin badly, kills between a flush and its
commit, secrets in odd encodings, two pseudonym keys, a read-only working directory,
and an HTTP endpoint held open by idle clients.

Storage is made unwritable with `chattr -R +i` (the tests run as root, and root ignores
permission bits). Each check asserts on what storage holds afterwards, counted through
the events Delta table (deltalake: files of a flush killed before its commit stay on
disk and are in no snapshot, so a glob would count them), or on the process's exit
code, output and open file descriptors.
"""
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import events_table, run

DEV = {"SOHOA__PRIVACY__DEVELOPMENT_MODE": "true", "SOHOA__HTTP__LISTEN": ""}
REAL_KEY = "0123456789abcdef-a-real-key-for-tests"


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SOHOA")}
    e.update(extra)
    return e


def chattr(flag, path):
    return subprocess.run(["chattr", "-R", flag, str(path)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def feed(tmp_path_factory, sohoa):
    """A generated province feed: 1% of its lines cut short, each with a name and an ID."""
    work = tmp_path_factory.mktemp("feed")
    path = work / "feed.jsonl"
    r = run([sohoa, "generate", "--dossiers", "4000", "--seed", "25", "--out", str(path),
             "--truth", str(work / "truth.json")])
    assert r.returncode == 0, r.stderr
    return path


def lines_of(path):
    return [l for l in path.read_bytes().split(b"\n") if l.strip()]


def backfill(sohoa, files, out, extra=None, **kw):
    args = [sohoa, "ingest", "--out", str(out)]
    for f in files:
        args += ["--from-file", str(f)]
    return run(args, env=env(**{**DEV, **(extra or {})}), **kw)


def events_in(out):
    """Rows of the table's newest snapshot, and distinct event ids among them."""
    ids = events_table(out).to_pyarrow_dataset().to_table(columns=["event_id"]).column("event_id")
    return len(ids), len(pc.unique(ids))


def rejects_in(out):
    """Every reject record under the root, and the files that hold them."""
    files = sorted((out / "_sohoa" / "rejects").rglob("*.jsonl"))
    records = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            records.append(json.loads(line))  # a torn line fails here
    return records, files


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sohoa, feed):
    """The feed loaded once, undisturbed: what every faulty run must end up holding."""
    out = tmp_path_factory.mktemp("reference") / "data"
    r = backfill(sohoa, [feed], out)
    assert r.returncode == 0, r.stderr
    events = events_in(out)
    assert events[0] > events[1] > 0, "the generator sends 2% of messages twice"
    rejects, _ = rejects_in(out)
    assert rejects, "the generator cuts 1% of lines short"
    return {"events": events, "rejects": sorted((r["source"], r["line"]) for r in rejects)}


def test_storage_unwritable_mid_backfill_retries_with_backoff_and_loses_nothing(
        sohoa, feed, reference, tmp_path):
    assert chattr("+i", tmp_path) and chattr("-i", tmp_path), "chattr +i must work here"
    out = tmp_path / "data"
    proc = subprocess.Popen(
        [sohoa, "ingest", "--from-file", str(feed), "--out", str(out)],
        env=env(**DEV, SOHOA__FLUSH__MAX_ROWS="1500"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    reader.start()
    # Version 0 creates the table; version 1 is the first flush's commit.
    first_flush = out / "events" / "_delta_log" / f"{1:020}.json"
    deadline = time.time() + 120
    while time.time() < deadline and not first_flush.exists():
        time.sleep(0.02)
    assert first_flush.exists(), "no flush committed"
    assert chattr("+i", out)
    try:
        time.sleep(3)
    finally:
        assert chattr("-i", out)
    proc.wait(timeout=300)
    reader.join()
    log = err[0]
    assert proc.returncode == 0, log[-3000:]
    assert "every line is committed" in log
    assert events_in(out) == reference["events"]
    rejects, _ = rejects_in(out)
    assert sorted((r["source"], r["line"]) for r in rejects) == reference["rejects"]
    # Backoff: a few tries in three seconds, one log line each, not one per record.
    retries = log.count("flush failed; will retry")
    assert 1 <= retries <= 10, f"{retries} retries logged"


def test_storage_down_past_the_drain_deadline_fails_and_says_how_far_it_got(
        sohoa, feed, reference, tmp_path):
    out = tmp_path / "data"
    first = lines_of(feed)[:3000]
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"\n".join(first) + b"\n")
    # A root that cannot be written at all is refused at startup, by the probe of its
    # conditional puts, before anything is read.
    out.mkdir()
    assert chattr("+i", out)
    try:
        refused = backfill(sohoa, [part], out)
    finally:
        assert chattr("-i", out)
    assert refused.returncode == 1 and "storage.root: probing conditional puts" in refused.stderr, \
        refused.stderr[-2000:]
    # So the outage here is of the table alone, once it exists: every flush of the file
    # fails until the drain deadline.
    seed = tmp_path / "seed.jsonl"
    seed.write_bytes(b"\n".join(l for l in lines_of(feed)[3000:3100] if is_json(l)) + b"\n")
    r = backfill(sohoa, [seed], out)
    assert r.returncode == 0, r.stderr[-2000:]
    seeded = events_in(out)
    assert chattr("+i", out / "events")
    try:
        r = backfill(sohoa, [part], out, {"SOHOA__SHUTDOWN__DRAIN_DEADLINE_MS": "3000"})
    finally:
        assert chattr("-i", out / "events")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "not every line was committed" in r.stderr
    assert re.search(r"part\.jsonl committed through line 0 of 3000", r.stderr), r.stderr[-2000:]
    assert "A re-run resumes" in r.stderr
    assert events_in(out) == seeded, "nothing of the failed run is in the table"
    again = backfill(sohoa, [part], out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "every line is committed" in again.stderr


def test_a_bom_or_a_cut_first_line_does_not_turn_a_file_into_one_reject(sohoa, feed, tmp_path):
    good = [l for l in lines_of(feed)[:400] if is_json(l)][:300]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b"\n".join(good) + b"\n")
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(good[0][: len(good[0]) // 2] + b"\n" + b"\n".join(good[1:]) + b"\n")
    r = backfill(sohoa, [bom], tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert "300 messages" in r.stderr and "0 messages rejected" in r.stderr, r.stderr
    r = backfill(sohoa, [cut], tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert "300 messages" in r.stderr and "1 messages rejected" in r.stderr, r.stderr
    # Neither lines nor a document: an error naming the file, and nothing loaded.
    junk = tmp_path / "junk.jsonl"
    junk.write_text("this is\nnot json\nat all\n")
    r = backfill(sohoa, [junk], tmp_path / "c")
    assert r.returncode == 1
    assert "junk.jsonl: neither JSON lines (0 of the first 3 lines" in r.stderr, r.stderr
    assert not loaded(tmp_path / "c")


def loaded(out):
    """Data files in the root's events table (none when there is no table)."""
    if not (out / "events" / "_delta_log").exists():
        return []
    return events_table(out).file_uris()


def is_json(line):
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("point", ["after_stage_file", "before_commit", "after_commit"])
def test_killed_and_rerun_backfills_keep_each_reject_once(sohoa, feed, reference, tmp_path, point):
    out = tmp_path / "data"
    small = {"SOHOA__FLUSH__MAX_ROWS": "2000"}
    kills = 0
    # Each run resumes where the last one died, so the counts stay small: a slow host
    # flushes bigger ranges, and a feed of ~17k lines may hold only four or five.
    for after in (1, 2, 1):
        r = backfill(sohoa, [feed], out, {**small, "SOHOA_CRASH_AT": point,
                                          "SOHOA_CRASH_AFTER": str(after)})
        kills += r.returncode != 0
    assert kills >= 2, "the crash point was reached"
    r = backfill(sohoa, [feed], out, small)
    assert r.returncode == 0, r.stderr[-2000:]
    assert events_in(out) == reference["events"]
    if point != "after_commit":
        # The killed flushes' files are on disk, in no snapshot: the count above is right
        # because it goes by the table.
        on_disk = {p for p in (out / "events").rglob("*.parquet") if "_delta_log" not in p.parts}
        assert len(on_disk) > len(events_table(out).file_uris())
    rejects, files = rejects_in(out)
    got = sorted((r["source"], r["line"]) for r in rejects)
    assert got == reference["rejects"], f"{len(got)} reject records for {len(reference['rejects'])}"
    assert len(files) > 1, "one rejects file per committed range"


def test_no_name_or_id_number_reaches_the_storage_root(sohoa, feed, tmp_path):
    secrets = set()
    for line in lines_of(feed):
        if not is_json(line):
            text = line.decode("utf-8", "replace")
            secrets |= set(re.findall(r'"ChuHoSo":"([^"]+)"', text))
            secrets |= set(re.findall(r'"SoGiayToChuHoSo":"(\d{9,12})"', text))
    ids = {s for s in secrets if s.isdigit()}
    assert "Nguyễn Văn A" in secrets and len(ids) > 10, "the cut lines carry names and IDs"
    for out, extra in ((tmp_path / "plain", {}),
                       (tmp_path / "data", {"SOHOA__REJECTS__RAW_ROOT": str(tmp_path / "restricted")})):
        r = backfill(sohoa, [feed], out, extra)
        assert r.returncode == 0, r.stderr
        under_root = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
        for s in secrets:
            assert s.encode() not in under_root, f"{s!r} under the storage root"
        rejects, _ = rejects_in(out)
        assert rejects and all(len(r["digest"]) == 64 and r["bytes"] > 0 for r in rejects)
    # The raw bytes are where the configuration says, and only there.
    raw = tmp_path / "restricted"
    raw_text = b"".join(p.read_bytes() for p in raw.rglob("*.jsonl"))
    assert all(i.encode() in raw_text for i in ids)
    assert len(raw_text.splitlines()) == len(rejects)
    # Retention: nothing is older than a day yet.
    kept = run([sohoa, "purge-rejects"], env=env(SOHOA__REJECTS__RAW_ROOT=str(raw)))
    assert kept.returncode == 0 and "deleted 0" in kept.stderr, kept.stderr
    old = time.time() - 40 * 86400
    for p in raw.rglob("*.jsonl"):
        os.utime(p, (old, old))
    purged = run([sohoa, "purge-rejects"], env=env(SOHOA__REJECTS__RAW_ROOT=str(raw)))
    assert purged.returncode == 0, purged.stderr
    assert not list(raw.rglob("*.jsonl")), purged.stderr


def test_a_non_utf8_variable_is_named_never_printed_and_never_a_panic(sohoa, tmp_path):
    secret = b"s3cr3t-\xff\xfe-value"
    e = {k.encode(): v.encode() for k, v in env(**DEV).items()}
    e[b"SOHOA__KAFKA__BROKERS"] = secret
    r = subprocess.run([sohoa, "ingest", "--from-file", "/dev/null", "--out", str(tmp_path / "a")],
                       env=e, capture_output=True)
    assert r.returncode == 2, r.stderr
    assert b"SOHOA__KAFKA__BROKERS" in r.stderr and b"not valid UTF-8" in r.stderr
    assert b"s3cr3t" not in r.stderr and b"panicked" not in r.stderr
    # A binary pseudonym key is a key like any other.
    fixture = tmp_path / "one.jsonl"
    fixture.write_text(json.dumps({"service": "DongBoHoSoMC", "data": []}) + "\n")
    e = {k.encode(): v.encode() for k, v in env(SOHOA__HTTP__LISTEN="").items()}
    e[b"SOHOA_PSEUDONYM_KEY"] = b"\xff\xfe" * 16
    r = subprocess.run([sohoa, "ingest", "--from-file", str(fixture), "--out", str(tmp_path / "b")],
                       env=e, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert b"\xff\xfe" not in r.stderr and b"panicked" not in r.stderr


def fingerprint(key: bytes) -> str:
    return hmac.new(key, b"sohoa pseudonym key fingerprint v1", hashlib.sha256).hexdigest()[:8]


def test_one_key_at_a_time_and_every_file_names_its_key(sohoa, feed, tmp_path):
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"\n".join(lines_of(feed)[:500]) + b"\n")
    both = backfill(sohoa, [part], tmp_path / "x", {"SOHOA_PSEUDONYM_KEY": REAL_KEY})
    assert both.returncode == 2
    assert "SOHOA_PSEUDONYM_KEY is set and development mode is on" in both.stderr, both.stderr
    assert not loaded(tmp_path / "x")

    out = tmp_path / "data"
    real = run([sohoa, "ingest", "--from-file", str(part), "--out", str(out)],
               env=env(SOHOA_PSEUDONYM_KEY=REAL_KEY, SOHOA__HTTP__LISTEN=""))
    assert real.returncode == 0, real.stderr
    files = events_table(out).file_uris()
    assert files
    keys = {pq.read_metadata(f).metadata[b"sohoa.pseudonym_key"].decode() for f in files}
    assert keys == {fingerprint(REAL_KEY.encode())}
    # The same root, another file, the public development key: refused when aggregated.
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"\n".join(lines_of(feed)[500:900]) + b"\n")
    dev = backfill(sohoa, [other], out)
    assert dev.returncode == 0, dev.stderr
    agg = run([sohoa, "aggregate", "--root", str(out), "--as-of", "2025-12-31", "--no-report"],
              env=env())
    assert agg.returncode == 1, agg.stderr
    assert "2 different keys" in agg.stderr and "the public development key" in agg.stderr
    allowed = run([sohoa, "aggregate", "--root", str(out), "--as-of", "2025-12-31", "--no-report",
                   "--allow-mixed-keys"], env=env())
    assert allowed.returncode == 0, allowed.stderr
    assert "public development key" in allowed.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_http_endpoint_sheds_idle_clients_and_answers_only_get_and_head(sohoa, tmp_path):
    port, dead_broker = free_port(), free_port()
    proc = subprocess.Popen(
        [sohoa, "ingest", "--out", str(tmp_path / "data")],
        env=env(**{**DEV, "SOHOA__HTTP__LISTEN": f"127.0.0.1:{port}",
                   "SOHOA__KAFKA__BROKERS": f"127.0.0.1:{dead_broker}"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if http(port, "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert http(port, "/healthz") == (200, b"ok\n")
        # No broker answers: not ready, whatever the process state.
        assert http(port, "/readyz")[0] == 503
        assert http(port, "/metrics", "POST")[0] == 405
        assert http(port, "/metrics", "DELETE")[0] == 405
        status, body = http(port, "/metrics", "HEAD")
        assert status == 200 and body == b""

        fds = lambda: len(os.listdir(f"/proc/{proc.pid}/fd"))
        before = fds()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(400)]
        try:
            time.sleep(8)  # past the endpoint's read timeout
            assert fds() <= before + 8, f"{fds()} descriptors, {before} before 400 idle clients"
            status, body = http(port, "/metrics")
            assert status == 200 and b"sohoa_ingest_buffered_bytes" in body
        finally:
            for s in idle:
                s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
