"""Torn writes are detected, never trusted: sha256 modes of manifest checks, torn metric lines, partial leftovers."""

from __future__ import annotations

import json
import os

from ringctl import artifacts
from ringctl.pipeline.context import Tracker


def test_manifest_sha256_modes(tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    f = out / "w.bin"
    f.write_bytes(b"abcd")
    manifest = artifacts.write_manifest(tmp_path, {"final": {"path": out}})
    st = f.stat()
    f.write_bytes(b"abce")  # same size, modification time changes: the default mode re-hashes it
    assert artifacts.manifest_problems(manifest) == [f"final: {f} sha256 mismatch"]
    assert artifacts.manifest_problems(manifest, verify_hashes=False) == []  # sizes only
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # time put back: only a full check can tell
    assert artifacts.manifest_problems(manifest) == []
    assert artifacts.manifest_problems(manifest, verify_hashes=True) == [f"final: {f} sha256 mismatch"]


def test_torn_metric_line_is_dropped_and_rewind_keeps_the_rest(tmp_path):
    t = Tracker(tmp_path)
    t.log_metrics(1, loss=2.0)
    t.log_metrics(2, loss=1.5)
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "lo')  # a write cut by a kill
    assert [r["step"] for r in t.history()] == [1, 2]
    t.rewind(1)
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [{"step": 1, "loss": 2.0}]
    t.rewind(-1)  # a fresh start keeps nothing of a killed attempt
    assert t.history() == []


def test_clean_partial_removes_only_unfinished_writes(tmp_path):
    (tmp_path / ".tmp-step-000004-x").mkdir()
    (tmp_path / ".manifest.json.abc.tmp").write_text("{")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "step-000004").mkdir()
    artifacts.clean_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "step-000004"]
