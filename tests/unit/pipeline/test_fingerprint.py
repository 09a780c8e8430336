from __future__ import annotations

from ringctl.pipeline.fingerprint import FingerprintParts, explain_change


def _parts(**kw):
    base = dict(config={"kind": "sft", "epochs": 3, "lr": 1e-4}, inputs={"filter.sft": "abc"}, code_version="c1",
                libraries={"torch": "2.13.0"}, recipe_context={"seed": 1})
    base.update(kw)
    return FingerprintParts(**base)


def test_fingerprint_is_stable_and_sensitive():
    assert _parts().fingerprint == _parts().fingerprint
    assert _parts().fingerprint != _parts(config={"kind": "sft", "epochs": 4, "lr": 1e-4}).fingerprint
    assert _parts().fingerprint != _parts(inputs={"filter.sft": "abd"}).fingerprint
    assert _parts().fingerprint != _parts(code_version="c2").fingerprint
    assert _parts().fingerprint != _parts(libraries={"torch": "2.14.0"}).fingerprint


def test_explain_change_names_each_changed_part():
    old = _parts().to_json()
    new = _parts(config={"kind": "sft", "epochs": 5, "lr": 1e-4}, inputs={"filter.sft": "zzz"}, code_version="c2",
                 libraries={"torch": "2.14.0"}, recipe_context={"seed": 2})
    reasons = explain_change(old, new)
    assert "config epochs: 3 -> 5" in reasons
    assert "recipe seed: 1 -> 2" in reasons
    assert "input filter.sft changed" in reasons
    assert "stage code changed: code version c1 -> c2" in reasons  # parts without per-file hashes
    assert "torch 2.13.0 -> 2.14.0" in reasons
    assert explain_change(old, _parts()) == []


def test_external_files_are_part_of_the_fingerprint(tmp_path):
    import os

    from ringctl.pipeline.fingerprint import file_stamps

    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a"}\n')
    before = _parts(files=file_stamps([str(data)]))
    data.write_text('{"prompt": "a changed"}\n')
    os.utime(data, ns=(1, 1))
    after = _parts(files=file_stamps([str(data)]))
    assert before.fingerprint != after.fingerprint
    assert explain_change(before.to_json(), after) == [f"file {data} changed"]
    assert file_stamps([str(tmp_path / "nope")]) == {str(tmp_path / "nope"): "missing"}


def test_code_change_names_the_changed_files():
    from ringctl.pipeline.fingerprint import code_changes

    old = _parts(code_files={"stages/x.py": "1", "ringctl/a.py": "2", "ringctl/gone.py": "3"}).to_json()
    new = _parts(code_version="c2", code_files={"stages/x.py": "1", "ringctl/a.py": "9", "ringctl/new.py": "4"})
    assert code_changes(old, new.to_json()) == [{"path": "ringctl/a.py", "change": "modified"},
                                                {"path": "ringctl/gone.py", "change": "removed"},
                                                {"path": "ringctl/new.py", "change": "added"}]
    assert explain_change(old, new) == ["stage code changed: ringctl/a.py, ringctl/gone.py (removed), "
                                        "ringctl/new.py (added)"]
    assert code_changes(old, old) is None
