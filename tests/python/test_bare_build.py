"""tests/check-bare-build: the rules that keep the build on rustup, a C compiler, make and
perl, and the binary on glibc alone.

The checker runs on this workspace in tests/run. These tests show that it can fail: each
way a build has slipped back to a system library (a `-sys` crate without its vendored
feature, a new native crate nobody has looked at, a binary that links libssl) is fed to
it, and it must name the crate or the library."""
import copy
import importlib.machinery
import importlib.util
import pathlib
import subprocess

import pyarrow
import pytest
from conftest import ROOT

SCRIPT = ROOT / "tests" / "check-bare-build"


def load_checker():
    loader = importlib.machinery.SourceFileLoader("check_bare_build", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


check = load_checker()


@pytest.fixture(scope="module")
def metadata():
    return check.cargo_metadata(ROOT / "Cargo.toml", check.host_triple())


def with_features(metadata, name, change):
    """A copy of `metadata` with `change` applied to the resolved features of crate `name`."""
    changed = copy.deepcopy(metadata)
    ids = {p["id"] for p in changed["packages"] if p["name"] == name}
    assert ids, f"{name} is not in the graph"
    for node in changed["resolve"]["nodes"]:
        if node["id"] in ids:
            node["features"] = sorted(change(set(node["features"])))
    return changed


def add_package(metadata, name, links=None, features=()):
    changed = copy.deepcopy(metadata)
    pid = f"registry+https://github.com/rust-lang/crates.io-index#{name}@1.0.0"
    changed["packages"].append({"id": pid, "name": name, "version": "1.0.0", "links": links})
    changed["resolve"]["nodes"].append({"id": pid, "features": list(features), "deps": []})
    return changed


def test_this_workspace_builds_every_native_library_from_source(metadata):
    problems, table = check.check_metadata(metadata)
    assert problems == []
    names = {name for name, *_ in table}
    # The crates that bring C code into the build, each judged by a rule.
    assert {"openssl-sys", "openssl-src", "libz-sys", "rdkafka-sys", "zstd-sys", "libmimalloc-sys"} <= names


@pytest.mark.parametrize("crate, feature, expected", [
    ("openssl-sys", "vendored", "openssl-sys 0.9"),
    ("libz-sys", "static", "libz-sys 1."),
    ("rdkafka-sys", "ssl-vendored", "`ssl` is on without `ssl-vendored`"),
    ("rdkafka-sys", "libz-static", "`libz` is on without `libz-static`"),
])
def test_a_vendored_feature_turned_off_fails(metadata, crate, feature, expected):
    problems, _ = check.check_metadata(with_features(metadata, crate, lambda f: f - {feature}))
    assert len(problems) == 1, problems
    assert expected in problems[0]


@pytest.mark.parametrize("crate, feature", [
    ("zstd-sys", "pkg-config"),
    ("rdkafka-sys", "dynamic-linking"),
    ("rdkafka-sys", "cmake-build"),
    ("aws-lc-sys", "bindgen"),
])
def test_a_system_library_feature_turned_on_fails(metadata, crate, feature):
    problems, _ = check.check_metadata(with_features(metadata, crate, lambda f: f | {feature}))
    assert len(problems) == 1, problems
    assert problems[0].startswith(crate) and f"`{feature}` is on" in problems[0]


def test_an_unknown_native_crate_fails_loudly(metadata):
    for name, links in (("libsqlite3-sys", "sqlite3"), ("curl-sys", None), ("lz4-src", None),
                        ("bzip2", "bzip2")):
        problems, _ = check.check_metadata(add_package(metadata, name, links=links))
        assert len(problems) == 1, problems
        assert problems[0].startswith(f"{name} 1.0.0: a native crate this check does not know")


def test_a_pure_rust_crate_is_not_judged(metadata):
    problems, table = check.check_metadata(add_package(metadata, "serde-like"))
    assert problems == []
    assert "serde-like" not in {name for name, *_ in table}


LDD_BEFORE_VENDORING = """\
\tlinux-vdso.so.1 (0x00007ffd5a3c1000)
\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f6f1c8e0000)
\tlibcrypto.so.3 => /lib/x86_64-linux-gnu/libcrypto.so.3 (0x00007f6f1c400000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f6f1c8c0000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f6f1c8a0000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f6f1c321000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f6f1c140000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f6f1c920000)
"""


def test_ldd_names_each_library_beyond_glibc():
    problems, libs = check.judge_ldd("sohoa", LDD_BEFORE_VENDORING)
    assert len(libs) == 8
    assert [p.split()[2].rstrip(",") for p in problems] == ["libssl.so.3", "libcrypto.so.3", "libz.so.1"]


def test_ldd_of_glibc_alone_passes():
    glibc_only = "".join(l + "\n" for l in LDD_BEFORE_VENDORING.splitlines() if "ssl" not in l
                         and "crypto" not in l and "libz" not in l)
    assert check.judge_ldd("sohoa", glibc_only) == ([], [
        "linux-vdso.so.1", "libgcc_s.so.1", "libm.so.6", "libc.so.6", "ld-linux-x86-64.so.2"])


def test_ldd_fails_a_missing_library():
    problems, _ = check.judge_ldd("sohoa", "\tlibm.so.6 => not found\n")
    assert len(problems) == 1 and "not found" in problems[0]


def test_the_built_binary_passes_and_a_library_beyond_glibc_does_not(sohoa):
    ok = subprocess.run([str(SCRIPT), sohoa], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "libc.so.6" in ok.stdout
    # pyarrow's C++ library links libstdc++, which a bare machine need not have.
    libarrow = next(pathlib.Path(pyarrow.__file__).parent.glob("libarrow.so.*"))
    bad = subprocess.run([str(SCRIPT), str(libarrow)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert f"{libarrow} links libstdc++.so.6" in bad.stderr


def test_the_workspace_rust_version_covers_every_dependency(metadata):
    assert check.check_rust_version(metadata) == []
    # A dependency that moves to a newer Rust than the README asks for is caught.
    changed = copy.deepcopy(metadata)
    dep = next(p for p in changed["packages"] if p["name"] == "arrow-array")
    dep["rust_version"] = "1.999"
    problems = check.check_rust_version(changed)
    assert len(problems) == 1 and problems[0].startswith(f"arrow-array {dep['version']} needs Rust 1.999"), problems
    # "1.89" and "1.89.0" are the same version.
    assert check.version_tuple("1.89") == check.version_tuple("1.89.0") < check.version_tuple("1.89.1")
