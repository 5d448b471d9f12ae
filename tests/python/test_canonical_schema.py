"""The canonical events sohoa emits validate against the JSON Schema file, checked by an
independent validator (Python's jsonschema, with format checking), not by sohoa itself."""
import json

import jsonschema
import pytest
from conftest import FIXTURES, ROOT, run

SCHEMA = json.loads((ROOT / "schemas" / "json" / "dossier-event.v1.schema.json").read_text())


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize(
    "fixture,expected",
    [
        ("samples-envelope.json", 3),
        ("messy-record.json", 1),
        ("progress-envelope.json", 3),
    ],
)
def test_decoded_events_validate_independently(sohoa, fixture, expected):
    p = run([sohoa, "decode", "--dev", str(FIXTURES / "dvcqg" / fixture)])
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(events) == expected
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for e in events:
        errors = [f"{list(err.absolute_path)}: {err.message}" for err in validator.iter_errors(e)]
        assert errors == [], e["dossier_code"]
        assert e["schema_version"] == 1
        # Every time is UTC (RFC 3339 with Z).
        assert e["event_time"].endswith("Z")


def test_rejects_go_to_stderr_with_path_and_exit_1(sohoa):
    p = run([sohoa, "decode", "--dev", str(FIXTURES / "dvcqg" / "array-one-bad.json")])
    assert p.returncode == 1
    assert len(p.stdout.splitlines()) == 2
    assert '[1].NgayTiepNhan: "20231345" is not a date' in p.stderr
    assert "read 1 message(s): 2 events, 1 rejected" in p.stderr


def test_missing_pseudonym_key_is_a_clear_error(sohoa):
    env = {"PATH": "/usr/bin:/bin"}
    p = run([sohoa, "decode", str(FIXTURES / "dvcqg" / "samples-envelope.json")], env=env)
    assert p.returncode == 2
    assert "SOHOA_PSEUDONYM_KEY is not set" in p.stderr
    assert p.stdout == ""


def test_development_mode_warns_loudly(sohoa):
    p = run([sohoa, "decode", "--dev", str(FIXTURES / "dvcqg" / "samples-envelope.json")])
    assert "NOT protected" in p.stderr


def test_key_never_appears_in_output(sohoa):
    key = "a-very-secret-key-value-0123456789"
    env = {"PATH": "/usr/bin:/bin", "SOHOA_PSEUDONYM_KEY": key, "RUST_LOG": "trace"}
    p = run([sohoa, "decode", str(FIXTURES / "dvcqg" / "samples-envelope.json")], env=env)
    assert p.returncode == 0, p.stderr
    assert key not in p.stdout and key not in p.stderr
    pseudonyms = {json.loads(l)["applicant_pseudonym"] for l in p.stdout.splitlines()}
    assert len(pseudonyms) == 3 and all(len(x) == 64 for x in pseudonyms)
