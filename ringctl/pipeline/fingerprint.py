"""Stage fingerprints: what decides whether a stage's earlier outputs can be reused.

fingerprint = sha256(resolved stage config, fingerprints of its inputs, stage code version, library versions,
                     and the recipe sections the stage reads: seed, deterministic, model, backends, and the
                     sandbox limits where the stage runs code rewards)
The components are kept too, so that `plan` can say which one changed: for the code, the hash of every file the
stage can execute (`code_files`, its import closure: see ringctl.pipeline.closure), so it names the changed files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import metadata

TRACKED_LIBRARIES = ("torch", "transformers", "deepspeed", "vllm")


@cache
def library_versions() -> dict[str, str]:
    """Installed versions (read from package metadata, no import: cheap)."""
    out = {}
    for lib in TRACKED_LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class FingerprintParts:
    config: dict
    inputs: dict[str, str]  # reference -> fingerprint of the producing stage
    code_version: str
    libraries: dict[str, str]
    recipe_context: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # external file -> "size:mtime_ns"
    code_files: dict[str, str] = field(default_factory=dict)  # project file the stage can execute -> sha256

    @property
    def fingerprint(self) -> str:
        return _hash(asdict(self))[:20]

    def to_json(self) -> dict:
        return asdict(self)


def stage_fingerprint(name: str, stage_cfg, recipe, input_fingerprints: dict[str, str]) -> FingerprintParts:
    from ringctl.pipeline.closure import stage_code_files, stage_code_version
    from ringctl.recipe.base import RECOVERY_KEYS

    config = stage_cfg.model_dump(mode="json")
    config.pop("description", None)  # documentation only
    for key in RECOVERY_KEYS:  # how the runner recovers the stage, not what it computes
        config["launch"].pop(key, None)
    context = {
        "seed": recipe.seed,
        "deterministic": recipe.deterministic,
        "model": recipe.model.model_dump(mode="json"),
        "backends": recipe.backends.model_dump(mode="json"),
    }
    from ringctl.pipeline.preconditions import code_reward_stages

    if name in code_reward_stages(recipe):  # limits change rewards; which isolating backend runs does not
        context["sandbox"] = recipe.sandbox.model_dump(mode="json", exclude={"backend"})
    return FingerprintParts(config=config, inputs=dict(sorted(input_fingerprints.items())),
                            code_version=stage_code_version(stage_cfg.kind), libraries=library_versions(),
                            recipe_context=context, files=file_stamps(stage_cfg.external_files()),
                            code_files=stage_code_files(stage_cfg.kind))


def file_stamps(paths: list[str]) -> dict[str, str]:
    """size:mtime of each file (for a directory: of every file below it); 'missing' when absent."""
    import os

    out = {}
    for p in paths:
        path = os.path.abspath(p)
        if os.path.isdir(path):
            stamps = []
            for root, _, names in sorted(os.walk(path)):
                for n in sorted(names):
                    st = os.stat(os.path.join(root, n))
                    stamps.append(f"{n}:{st.st_size}:{st.st_mtime_ns}")
            out[path] = _hash(stamps)[:16]
        elif os.path.exists(path):
            st = os.stat(path)
            out[path] = f"{st.st_size}:{st.st_mtime_ns}"
        else:
            out[path] = "missing"
    return out


def _flatten(d, prefix=""):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: d}


def explain_change(old: dict, new: FingerprintParts) -> list[str]:
    """Human-readable reasons why `new` differs from an earlier fingerprint's parts `old`."""
    reasons = []
    new_d = new.to_json()
    for section, label in (("config", "config"), ("recipe_context", "recipe")):
        a, b = _flatten(old.get(section, {})), _flatten(new_d[section])
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<unset>") != b.get(key, "<unset>"):
                reasons.append(f"{label} {key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    for ref in sorted(set(old.get("inputs", {})) | set(new.inputs)):
        if old.get("inputs", {}).get(ref) != new.inputs.get(ref):
            reasons.append(f"input {ref} changed")
    for path in sorted(set(old.get("files", {})) | set(new.files)):
        if old.get("files", {}).get(path) != new.files.get(path):
            reasons.append(f"file {path} changed")
    if old.get("code_version") != new.code_version:
        reasons.append(f"stage code changed: {describe_code_change(old, new_d)}")
    for lib in sorted(set(old.get("libraries", {})) | set(new.libraries)):
        a, b = old.get("libraries", {}).get(lib), new.libraries.get(lib)
        if a != b:
            reasons.append(f"{lib} {a or 'absent'} -> {b or 'absent'}")
    return reasons


def code_changes(old: dict, new: dict) -> list[dict] | None:
    """The stage files that differ between two fingerprints' parts ([{"path", "change"}]); None when the code
    version is the same, or when the older parts predate per-file hashes (then only "changed" is known)."""
    if old.get("code_version") == new.get("code_version") or not old.get("code_files"):
        return None
    a, b = old["code_files"], new.get("code_files", {})
    return [{"path": p, "change": "added" if p not in a else "removed" if p not in b else "modified"}
            for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]


def describe_code_change(old: dict, new: dict, shown: int = 5) -> str:
    """The changed files, "ringctl/rl/loss.py, stages/rl.py (added)" (at most `shown` named), or the two code
    versions when the older parts have no per-file hashes."""
    changes = code_changes(old, new)
    if not changes:
        return f"code version {old.get('code_version')} -> {new.get('code_version')}"
    named = [c["path"] + ("" if c["change"] == "modified" else f" ({c['change']})") for c in changes]
    return ", ".join(named[:shown]) + (f" (+{len(named) - shown} more)" if len(named) > shown else "")
