"""Verifiable rewards: one verifier per domain, behind a registry.

    score(domain, response, reference, **meta) -> float in [0, 1]
    score_detailed(domain, response, reference, **meta) -> RewardResult(score, reason, meta)
    score_batch(items, workers=2, timeout=10.0) -> list[RewardResult]   (never raises for a bad item)
    verify_reference(domain, reference, **meta) -> (ok, reason)         (used by the data filter)
    known_domains() -> list[str]

Verifier modules are imported on first use, so importing this package stays cheap (math pulls in sympy).
A domain module exposes ``verify(response, reference, **meta) -> RewardResult`` and
``check_reference(reference, **meta) -> (ok, reason)``.
"""

from __future__ import annotations

from ringctl.rewards.base import RewardResult
from ringctl.rewards.verifiers import known_domains, score, score_detailed, verifier_module, verify_reference

__all__ = ["RewardResult", "known_domains", "score", "score_batch", "score_detailed", "verifier_module",
           "verify_reference"]


def score_batch(items: list[dict], workers: int = 2, timeout: float = 10.0) -> list[RewardResult]:
    """See ringctl.rewards.batch.score_batch (imported on first use: it pulls in multiprocessing, which `ringctl
    validate` does not need when the recipe schema imports the sandbox settings)."""
    from ringctl.rewards.batch import score_batch as batch

    return batch(items, workers=workers, timeout=timeout)
