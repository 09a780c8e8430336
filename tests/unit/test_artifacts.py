from __future__ import annotations

import pytest

from ringctl import artifacts


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "ckpt"
    with artifacts.atomic_dir(target) as d:
        (d / "w.bin").write_bytes(b"one")
    with pytest.raises(RuntimeError):
        with artifacts.atomic_dir(target) as d:
            (d / "w.bin").write_bytes(b"two")
            raise RuntimeError("crash mid-write")
    assert (target / "w.bin").read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_manifest_detects_missing_and_modified_files(tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "a.jsonl").write_text("x\n")
    manifest = artifacts.write_manifest(tmp_path, {"data": {"path": out}})
    assert manifest["outputs"]["data"]["files"][0]["sha256"] == artifacts.sha256_file(out / "a.jsonl")
    assert artifacts.manifest_problems(artifacts.read_manifest(tmp_path)) == []
    (out / "a.jsonl").write_text("y\n")
    assert artifacts.manifest_problems(manifest, verify_hashes=True)
    (out / "a.jsonl").unlink()
    assert "missing" in artifacts.manifest_problems(manifest)[0]
