"""Small arithmetic long-CoT records for SFT tests (self-contained: no dependency on the synthetic suite)."""

from __future__ import annotations

import json
import random
from pathlib import Path


def write_arithmetic(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        lines.append(json.dumps({
            "id": str(i), "prompt": f"compute {a}+{b}", "answer": str(a + b), "domain": "arithmetic",
            "source": "test", "metadata": {},
            "solution": f"<think>\n{a}+{b}={a + b}\n</think>\nthe answer is \\boxed{{{a + b}}}"}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
