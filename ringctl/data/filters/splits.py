"""Output splits: ordered rules on domain / source (/ having a solution) decide where a kept record goes."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import Field

from ringctl.recipe.base import Strict


class SplitRule(Strict):
    """A record matches when every given condition holds (an omitted condition matches anything)."""

    domains: list[str] | None = Field(None, description="domain names; shell-style wildcards allowed")
    sources: list[str] | None = Field(None, description="source names; shell-style wildcards allowed (e.g. gsm8k*)")
    has_solution: bool | None = Field(None, description="true: only records with a worked solution (SFT data)")

    def matches(self, record: dict) -> bool:
        if self.domains is not None and not any(fnmatchcase(str(record.get("domain")), p) for p in self.domains):
            return False
        if self.sources is not None and not any(fnmatchcase(str(record.get("source")), p) for p in self.sources):
            return False
        if self.has_solution is not None and bool(record.get("solution")) != self.has_solution:
            return False
        return True


def assign_splits(record: dict, rules: dict[str, SplitRule], default: str | None, all_matches: bool) -> list[str]:
    """Split names for a record: the first matching rule (or every one with all_matches), else the default."""
    names = []
    for name, rule in rules.items():
        if rule.matches(record):
            names.append(name)
            if not all_matches:
                break
    if not names and default is not None:
        names.append(default)
    return names
