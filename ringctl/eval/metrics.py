"""Evaluation metrics, as the field computes them, from per-sample scores (nothing here imports torch).

For a problem with n samples of which c are correct (score 1):
  pass@1  = mean over problems of c / n                      (the announcement's "pass@1 over n samples")
  pass@k  = mean over problems of 1 - C(n-c, k) / C(n, k)    (the unbiased estimator of Chen et al. 2021; k <= n)
  maj@n   = mean over problems of [the most frequent extracted answer is correct]   (answer benchmarks)
  stderr  = standard error over problems of c / n: sqrt(sample variance of the per-problem means / problems)
IFEval (Zhou et al. 2023), averaged over the n samples of every prompt:
  prompt_level_strict / _loose   fraction of responses that follow every instruction of their prompt
  inst_level_strict / _loose     fraction of instructions followed, over all instructions of all responses
  (loose: an instruction counts as followed when any of the eight loose variants of the response follows it:
  the response with its first line, its last line or both removed, each with and without '*').
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from ringctl.stats import mean_and_stderr


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k), computed as a product (no huge binomials)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def default_ks(n: int) -> list[int]:
    """Powers of two up to n: 1, 2, 4, ... <= n."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def majority_correct(answers: Sequence[str | None], scores: Sequence[float]) -> float:
    """maj@n for one problem: the score of the most frequent extracted answer (ties: the one seen first);
    samples without an answer do not vote, and a problem where no sample has one scores 0."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    best = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == best)
    return float(next(s for a, s in zip(answers, scores) if a == winner))


def summarise(per_problem: dict[str, list[float]], n: int, ks: Iterable[int]) -> dict:
    """pass@1, pass@k for each k, stderr and problem count from {problem_id: [score of each of the n samples]}."""
    if any(len(v) != n for v in per_problem.values()):
        bad = next(p for p, v in per_problem.items() if len(v) != n)
        raise ValueError(f"problem {bad!r} has {len(per_problem[bad])} samples, expected {n}")
    means = [sum(v) / n for v in per_problem.values()]
    pass1, stderr = mean_and_stderr(means)
    correct = [int(round(sum(v))) for v in per_problem.values()]
    pass_k = {str(k): sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ks}
    return {"num_problems": len(per_problem), "pass@1": pass1, "pass@k": pass_k, "stderr": stderr}


def ifeval_levels(followed: Sequence[dict[str, bool]], all_followed: Sequence[float]) -> tuple[float, float]:
    """(prompt-level, instruction-level) accuracy of a list of responses: `followed` holds each response's
    {instruction_id: followed}, `all_followed` each response's 0/1 verdict."""
    if not followed:
        return float("nan"), float("nan")
    prompt_level = sum(all_followed) / len(all_followed)
    total = sum(len(f) for f in followed)
    inst_level = sum(sum(bool(v) for v in f.values()) for f in followed) / total if total else float("nan")
    return prompt_level, inst_level
