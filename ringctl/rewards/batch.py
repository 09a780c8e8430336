"""Scoring many responses: a process pool with a per-item time limit, and no exception ever reaching the caller.

Each item is bounded inside its worker by an ITIMER_REAL alarm (workers run items on their main thread), so a
slow verifier costs its own item only. A whole-batch deadline backs that up: if a worker is stuck anyway (a C
extension ignoring signals), unfinished items score 0 and the pool's processes are killed.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ringctl.rewards.base import RewardResult

IN_PROCESS_MAX_ITEMS = 8


class ItemTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise ItemTimeout


def score_item(item: dict, timeout: float) -> RewardResult:
    """Score one {domain, response, reference, meta} item; errors and time-outs become a 0 with the reason."""
    from ringctl.rewards.verifiers import score_detailed

    domain = item.get("domain", "?")
    # Borrow ITIMER_REAL when it is free or due later than our limit (pytest-timeout, an outer watchdog), and
    # give it back afterwards with its remaining time; an earlier outer timer is left alone to fire first.
    outer_remaining = signal.getitimer(signal.ITIMER_REAL)[0]
    can_alarm = threading.current_thread() is threading.main_thread() and timeout > 0 \
        and (outer_remaining == 0 or outer_remaining > timeout)
    old = signal.signal(signal.SIGALRM, _on_alarm) if can_alarm else None
    start = time.perf_counter()
    try:
        if can_alarm:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        result = score_detailed(domain, item.get("response", ""), item.get("reference"), **(item.get("meta") or {}))
    except ItemTimeout:
        result = RewardResult(0.0, f"verifier timed out after {timeout:g}s", {"domain": domain, "error": "timeout"})
    except Exception as e:
        result = RewardResult(0.0, f"verifier error: {type(e).__name__}: {e}"[:500],
                              {"domain": domain, "error": type(e).__name__})
    finally:
        if can_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            if outer_remaining > 0:
                left = outer_remaining - (time.perf_counter() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
    result.meta.setdefault("seconds", round(time.perf_counter() - start, 4))
    return result


def _context() -> multiprocessing.context.BaseContext:
    # fork is fastest, but forking a process with threads (torch, mlflow) can deadlock; forkserver is safe then
    method = "fork" if threading.active_count() == 1 else "forkserver"
    return multiprocessing.get_context(method)


def score_batch(items: list[dict], workers: int = 2, timeout: float = 10.0) -> list[RewardResult]:
    """Score items ({domain, response, reference, meta}) in order. Small batches are scored in this process
    (code items still run in the sandbox's own processes)."""
    if not items:
        return []
    if len(items) <= IN_PROCESS_MAX_ITEMS or workers <= 1:
        return [score_item(item, timeout) for item in items]
    workers = min(workers, len(items), os.cpu_count() or 1) or 1
    results: list[RewardResult | None] = [None] * len(items)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context())
    stuck = False
    try:
        futures = [pool.submit(score_item, item, timeout) for item in items]
        deadline = time.monotonic() + timeout * math.ceil(len(items) / workers) + 5.0 + timeout
        for i, fut in enumerate(futures):
            try:
                results[i] = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                stuck = True
                results[i] = RewardResult(0.0, "verifier did not finish before the batch deadline",
                                          {"domain": items[i].get("domain", "?"), "error": "timeout"})
            except Exception as e:  # a worker died (BrokenProcessPool) or could not unpickle the item
                results[i] = RewardResult(0.0, f"worker failed: {type(e).__name__}: {e}"[:500],
                                          {"domain": items[i].get("domain", "?"), "error": type(e).__name__})
    finally:
        if stuck:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
        pool.shutdown(wait=not stuck, cancel_futures=True)
    return [r if r is not None else RewardResult(0.0, "not scored", {}) for r in results]
