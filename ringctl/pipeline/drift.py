"""What changed since a run started: the recipe file (re-resolved with the run's overrides) and stage code."""

from __future__ import annotations

import difflib
from pathlib import Path

from ringctl.errors import RecipeError
from ringctl.pipeline.closure import stage_code_files, stage_code_version
from ringctl.pipeline.fingerprint import describe_code_change
from ringctl.pipeline.state import DONE, RESOLVED_RECIPE


def drift_report(state, loaded) -> str:
    """Empty when nothing drifted; otherwise a readable report (a unified diff of the recipe, code changes)."""
    from ringctl.recipe.loader import dump_yaml, load_recipe

    parts = []
    source = Path(state.data["recipe_source"])
    stored_text = (state.run_dir / RESOLVED_RECIPE).read_text(encoding="utf-8")
    if source.exists():
        try:
            current = load_recipe(source, state.data.get("overrides", []))
            current_text = dump_yaml(current.resolved)
        except RecipeError as e:
            current_text = None
            parts.append(f"recipe {source} no longer validates:\n{e}")
        if current_text is not None and current_text != stored_text:
            diff = difflib.unified_diff(stored_text.splitlines(), current_text.splitlines(),
                                        f"{RESOLVED_RECIPE} (stored with the run)", f"{source} (now)", lineterm="")
            parts.append("recipe changed:\n" + "\n".join(diff))
    for name in state.data["order"]:
        st = state.stage(name)
        if st["status"] in DONE or not st.get("parts"):
            continue
        kind = loaded.recipe.stages[name].kind
        now = {"code_version": stage_code_version(kind), "code_files": stage_code_files(kind)}
        if st["parts"]["code_version"] != now["code_version"]:
            parts.append(f"stage code changed: {name} ({kind}): {describe_code_change(st['parts'], now)}")
    return "\n".join(parts)
