"""The stage-side MLflow sink during an outage: the first failure turns it offline; tags, params and artifacts go
to the run's journal (metrics stay in metrics.jsonl), and nothing blocks the caller."""

from __future__ import annotations

import socket
import time

from ringctl.tracking import Journal, MlflowSink


def _dead_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once the socket is closed


def test_sink_goes_offline_and_journals_what_it_could_not_send(tmp_path):
    journal = Journal(tmp_path)
    sink = MlflowSink(_dead_uri(), "0123456789abcdef", journal, stage="sft")
    t0 = time.perf_counter()
    sink.log_metrics(1, {"loss": 1.0})
    sink.set_tag("ringctl.selected_checkpoint", "epoch-1")
    sink.log_params({"a": {"b": 1}})
    assert time.perf_counter() - t0 < 1.0  # queued: the training step does not wait for the network
    sink.close(timeout=120)
    assert sink.offline
    ops = [(e["op"], e["stage"]) for e in journal.entries()]
    assert ops[0] == ("offline", "sft")
    assert ("set_tag", "sft") in ops and ("log_params", "sft") in ops
    assert not any(op == "log_metrics" for op, _ in ops)  # metrics.jsonl holds them
    tag = next(e for e in journal.entries() if e["op"] == "set_tag")
    assert tag["args"] == {"key": "ringctl.selected_checkpoint", "value": "epoch-1"}
    journal.archive()
    assert journal.entries() == [] and (tmp_path / "tracking.synced.jsonl").exists()


def test_offline_sink_sends_nothing(tmp_path):
    journal = Journal(tmp_path)
    sink = MlflowSink("http://127.0.0.1:9", None, journal, stage="rl", offline=True)
    sink.log_artifact(tmp_path / "report.json")
    sink.close()
    assert [e["op"] for e in journal.entries()] == ["log_artifact"]
