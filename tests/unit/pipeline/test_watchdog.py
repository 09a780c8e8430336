"""The retry rule (which failures are retried), the recovery settings and the fingerprint staying unchanged."""

from __future__ import annotations

from ringctl.errors import BadInput
from ringctl.pipeline import watchdog


def _ranks(tmp_path, *outcomes):
    """One record per rank: "killed" (started, never exited) or an exit (code, exception or None)."""
    for rank, outcome in enumerate(outcomes):
        watchdog.rank_started(tmp_path, rank)
        if outcome != "killed":
            watchdog.rank_exited(tmp_path, rank, *outcome)
    return tmp_path


PEER_LOST = RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:20869")


def test_a_killed_rank_is_retried_even_when_its_peer_saw_the_connection_drop(tmp_path):
    retry, why = watchdog.retry_cause(_ranks(tmp_path, (1, PEER_LOST), "killed"), 1)
    assert retry and "rank(s) 1 died without exiting" in why


def test_a_real_error_on_any_rank_is_not_retried_whatever_else_happened(tmp_path):
    retry, why = watchdog.retry_cause(_ranks(tmp_path, "killed", (1, ValueError("bad shape"))), 1)
    assert not retry and "rank 1 reported an error (ValueError: bad shape)" in why
    retry, why = watchdog.retry_cause(_ranks(tmp_path / "b", (1, BadInput("no such file"))), 1)
    assert not retry and "bad input" in why


def test_only_lost_peers_are_retried_and_no_rank_at_all_is_not(tmp_path):
    assert watchdog.retry_cause(_ranks(tmp_path, (1, PEER_LOST), (1, PEER_LOST)), 1)[0]
    retry, why = watchdog.retry_cause(tmp_path / "none", 1)
    assert not retry and "before any rank started" in why
    assert watchdog.retry_cause(tmp_path / "none", -9)[0]  # the launcher itself killed


def test_recovery_settings_stage_over_recipe_and_not_in_the_fingerprint(monkeypatch):
    from ringctl.pipeline.fingerprint import stage_fingerprint
    from ringctl.recipe.loader import load_resolved
    from tests.helpers import PLUGINS

    monkeypatch.syspath_prepend(str(PLUGINS))
    text = """
name: r
resources: {retries: 2, retry_backoff_s: 3, hang_timeout: 600}
stages:
  a: {kind: toy_stages.counter, launch: {retries: 5}}
  b: {kind: toy_stages.counter}
"""
    recipe = load_resolved(text, "r.yaml").recipe
    a = watchdog.Recovery.of(recipe.stages["a"], recipe.resources)
    assert (a.retries, a.retry_backoff_s, a.hang_timeout) == (5, 3.0, 600.0)
    assert [a.backoff(n) for n in (1, 2, 3)] == [3.0, 6.0, 12.0]
    assert watchdog.Recovery.of(recipe.stages["b"], recipe.resources).retries == 2
    plain = load_resolved(text.replace("launch: {retries: 5}", "steps: 5").replace(
        "resources: {retries: 2, retry_backoff_s: 3, hang_timeout: 600}\n", ""), "r.yaml").recipe
    fp = lambda r: stage_fingerprint("a", r.stages["a"], r, {}).fingerprint  # noqa: E731
    assert fp(recipe) == fp(plain)
