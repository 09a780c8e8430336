"""The verifier of each reward domain, by name: modules imported on first use (math pulls in sympy), so importing
this module stays cheap. ringctl.rewards re-exports these functions; ringctl.rewards.batch scores many items with
them (in a process pool, a time limit per item).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from ringctl.rewards.base import RewardResult

# domain -> module implementing it; "gsm8k"/"stem" are the math verifier under the names readers may use
_DOMAIN_MODULES: dict[str, str] = {
    "math": "ringctl.rewards.math_answer",
    "stem": "ringctl.rewards.math_answer",
    "gsm8k": "ringctl.rewards.math_answer",
    "arithmetic": "ringctl.rewards.games.arithmetic",
    "countdown": "ringctl.rewards.games.countdown",
    "sudoku": "ringctl.rewards.games.sudoku",
    "maze": "ringctl.rewards.games.maze",
    "arc": "ringctl.rewards.games.arc",
    "code": "ringctl.rewards.code",
    "ifeval": "ringctl.rewards.ifeval",
}


def known_domains() -> list[str]:
    return sorted(name for name in _DOMAIN_MODULES if _available(name))


def _available(domain: str) -> bool:
    return importlib.util.find_spec(_DOMAIN_MODULES[domain]) is not None


def verifier_module(domain: str) -> ModuleType:
    if domain not in _DOMAIN_MODULES or not _available(domain):
        raise ValueError(f"unknown reward domain {domain!r}; known domains: {', '.join(known_domains())}")
    return importlib.import_module(_DOMAIN_MODULES[domain])


def score_detailed(domain: str, response: str, reference: Any, **meta: Any) -> RewardResult:
    result = verifier_module(domain).verify(response if isinstance(response, str) else str(response), reference,
                                            **meta)
    result.meta.setdefault("domain", domain)
    return result


def score(domain: str, response: str, reference: Any, **meta: Any) -> float:
    return score_detailed(domain, response, reference, **meta).score


def verify_reference(domain: str, reference: Any, **meta: Any) -> tuple[bool, str]:
    """Can the domain's verifier use this reference? Unknown domains and verifier errors give (False, why)."""
    try:
        module = verifier_module(domain)
    except ValueError as e:
        return False, str(e)
    try:
        ok, reason = module.check_reference(reference, **meta)
    except Exception as e:  # a malformed reference must not stop a filter run
        return False, f"{type(e).__name__}: {e}"
    return bool(ok), str(reason)
