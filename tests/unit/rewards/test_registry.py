"""Registry entry points and batch scoring (errors and time-outs become 0, never an exception)."""

import pytest

from ringctl.rewards import RewardResult, known_domains, score, score_batch, score_detailed, verifiers, verify_reference
from ringctl.rewards import batch as batch_module


def test_known_domains_and_unknown_domain_error():
    domains = known_domains()
    for d in ("math", "arithmetic", "countdown", "sudoku", "maze", "arc"):
        assert d in domains
    with pytest.raises(ValueError, match="known domains: .*arithmetic"):
        score("nonsense", "x", "y")
    assert verify_reference("nonsense", "y")[0] is False


def test_score_detailed_records_domain_and_answer():
    res = score_detailed("arithmetic", r"\boxed{12}", "12")
    assert isinstance(res, RewardResult) and res.score == 1.0 and res.meta["domain"] == "arithmetic"
    assert res.meta["answer"] == "12"


def _items():
    return [
        {"domain": "arithmetic", "response": r"\boxed{12}", "reference": "12", "meta": {}},
        {"domain": "arithmetic", "response": r"\boxed{13}", "reference": "12", "meta": {}},
        {"domain": "math", "response": r"\boxed{\frac{1}{2}}", "reference": "0.5", "meta": {}},
        {"domain": "unknown-domain", "response": "", "reference": None, "meta": {}},
        {"domain": "countdown", "response": r"\boxed{5+8}", "reference": "not a dict", "meta": {}},
    ]


def test_small_batch_in_process_never_raises():
    results = score_batch(_items())
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert "unknown reward domain" in results[3].reason
    assert "bad reference" in results[4].reason


def test_verifier_exception_and_timeout_become_zero(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("verifier bug")

    monkeypatch.setattr(verifiers, "score_detailed", boom)
    res = batch_module.score_item({"domain": "math", "response": "", "reference": "1"}, timeout=1.0)
    assert res.score == 0.0 and "RuntimeError: verifier bug" in res.reason

    def slow(*a, **k):
        while True:
            pass

    monkeypatch.setattr(verifiers, "score_detailed", slow)
    res = batch_module.score_item({"domain": "math", "response": "", "reference": "1"}, timeout=0.2)
    assert res.score == 0.0 and res.meta["error"] == "timeout"


@pytest.mark.slow
def test_pool_batch_matches_in_process_order():
    items = _items() * 4  # 20 items: goes through the process pool
    pooled = score_batch(items, workers=2)
    inline = score_batch(items, workers=1)
    assert [r.score for r in pooled] == [r.score for r in inline]
    assert [r.reason for r in pooled] == [r.reason for r in inline]
