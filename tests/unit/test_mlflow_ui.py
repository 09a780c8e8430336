"""The parts of `ringctl ui` that decide before a server starts: the links, the store, the port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ringctl.errors import BadInput
from ringctl.mlflow_ui import base_url, check_port, store_to_serve
from ringctl.tracking import UI_RUNS_VIEW, is_server_uri, sqlite_path, ui_link


def test_links_open_the_training_runs_view():
    assert UI_RUNS_VIEW == "?workflowType=machine_learning"
    assert ui_link("http://h:5000/", "7") == "http://h:5000/#/experiments/7?workflowType=machine_learning"
    assert ui_link("http://h:5000", "7", "abc") == ("http://h:5000/#/experiments/7/runs/abc"
                                                    "?workflowType=machine_learning")
    assert base_url("127.0.0.1", 5000) == "http://127.0.0.1:5000"
    assert base_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"  # a browser here reaches a wildcard bind locally
    assert base_url("::1", 5000) == "http://[::1]:5000"


def test_store_uris():
    assert sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_path("sqlite:////abs/x.db?mode=ro") == Path("/abs/x.db")
    assert sqlite_path("http://mlflow:5000") is None and sqlite_path("postgresql://u@h/db") is None
    assert is_server_uri("https://mlflow.example") and not is_server_uri("sqlite:///mlflow.db")


def test_a_missing_sqlite_store_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="no runs here yet: .*mlflow.db does not exist"):
        store_to_serve("sqlite:///mlflow.db")
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert store_to_serve("sqlite:///mlflow.db") == tmp_path
    assert store_to_serve("postgresql://u@h/db") == tmp_path  # other stores are the server's to check


def test_a_busy_port_is_refused_with_its_number():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BadInput, match=rf"port {port} on 127.0.0.1 is not free \(in use\): pass --port N"):
            check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)  # closed again: free
    with pytest.raises(BadInput, match="--host no-such-host.invalid: not an address"):
        check_port("no-such-host.invalid", port)
