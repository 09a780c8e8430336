"""verify_answers: drop items whose reference answer the domain's verifier cannot parse.

Calls ``ringctl.rewards.verify_reference(domain, reference, **metadata) -> (ok, reason)``; the step refuses to
start (before reading any record) when that function is not importable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field

from ringctl.data.filters.base import Filter, StepBase, StepConfigError

MAX_REASON_CHARS = 80


def load_verifier() -> Callable:
    try:
        from ringctl.rewards import verify_reference
    except ImportError as e:
        raise StepConfigError(
            f"step verify_answers needs ringctl.rewards.verify_reference(domain, reference, **meta), which is "
            f"not importable here ({e}); remove the step or install the rewards package") from e
    return verify_reference


class VerifyAnswers(StepBase):
    """Drop records whose reference answer the domain verifier rejects (reason: the verifier's)."""

    type: Literal["verify_answers"] = "verify_answers"
    domains: list[str] | None = Field(None, description="verify only these domains (others pass); default all")

    def build(self) -> Filter:
        return _VerifyFilter(load_verifier(), set(self.domains) if self.domains else None)


class _VerifyFilter(Filter):
    def __init__(self, verify: Callable, domains: set[str] | None):
        self.verify = verify
        self.domains = domains

    def check(self, record: dict) -> str | None:
        domain = record.get("domain", "unknown")
        if self.domains is not None and domain not in self.domains:
            return None
        ok, reason = self.verify(domain, record.get("answer"), **(record.get("metadata") or {}))
        if ok:
            return None
        return f"unverifiable:{domain}:{str(reason)[:MAX_REASON_CHARS]}"
