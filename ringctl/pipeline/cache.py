"""Cross-run stage cache: fingerprint -> a completed stage directory whose manifest is intact.

Also remembers, per (recipe, stage), the fingerprint parts of the last run, so `plan` can say what changed.
"""

from __future__ import annotations

import re
from pathlib import Path

from ringctl import artifacts
from ringctl.pipeline.fingerprint import FingerprintParts

CACHE_DIR = ".cache"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


class StageCache:
    def __init__(self, workdir: Path):
        self.root = Path(workdir) / CACHE_DIR

    def lookup(self, fingerprint: str, verify: bool | str = "changed") -> dict | None:
        """The cache entry with its manifest if the outputs are still intact (see
        `artifacts.manifest_problems` for `verify`), else None."""
        p = self.root / "fingerprints" / f"{fingerprint}.json"
        if not p.exists():
            return None
        entry = artifacts.read_json(p)
        manifest = artifacts.read_manifest(Path(entry["stage_dir"]))
        if manifest is None or artifacts.manifest_problems(manifest, verify):
            return None
        return {**entry, "manifest": manifest}

    def record(self, fingerprint: str, run_id: str, stage: str, stage_dir: Path) -> None:
        artifacts.atomic_write_json(self.root / "fingerprints" / f"{fingerprint}.json",
                                    {"run_id": run_id, "stage": stage, "stage_dir": str(Path(stage_dir).resolve())})

    def remember_parts(self, recipe: str, stage: str, parts: FingerprintParts, run_id: str) -> None:
        artifacts.atomic_write_json(self.root / "last" / _safe(recipe) / f"{_safe(stage)}.json",
                                    {"fingerprint": parts.fingerprint, "run_id": run_id, "parts": parts.to_json()})

    def last_parts(self, recipe: str, stage: str) -> dict | None:
        p = self.root / "last" / _safe(recipe) / f"{_safe(stage)}.json"
        return artifacts.read_json(p) if p.exists() else None
