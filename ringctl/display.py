"""Terminal display of a pipeline run: the DAG as a tree with each stage's state and elapsed time (rich Live),
or plain status lines on stderr when stderr is not a terminal or --json is given."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

STYLE = {"pending": "dim", "running": "bold yellow", "completed": "green", "cached": "cyan", "failed": "bold red",
         "interrupted": "magenta", "skipped": "dim"}
ICON = {"pending": "·", "running": "▶", "completed": "✓", "cached": "↺", "failed": "✗", "interrupted": "■"}


def _tail(path: str | None, n: int = 1) -> list[str]:
    if not path or not Path(path).exists():
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode("utf-8", "replace").replace("\r", "\n").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip() and not line.startswith("[ringctl] ")][-n:]


class RunDisplay:
    """Observer for the runner. Use as a context manager around `Runner.execute()`."""

    def __init__(self, run_id: str, order: list[str], kinds: dict[str, str], deps: dict[str, list[str]],
                 live: bool | None = None):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.run_id = run_id
        self.order = order
        self.kinds = kinds
        self.deps = deps
        self.status = {n: "pending" for n in order}
        self.info: dict[str, dict] = {n: {} for n in order}
        self.live_enabled = self.console.is_terminal if live is None else live
        self._live = None
        self._lock = threading.Lock()

    def __enter__(self):
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False,
                              get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)

    def __call__(self, stage: str, status: str, info: dict) -> None:
        with self._lock:
            self.status[stage] = status
            self.info[stage].update(info)
        if status == "completed":
            self._print_summary(info.get("log"))
        if self._live is None:
            extra = ""
            if status == "cached":
                extra = f" (outputs of {info.get('from')})"
            elif status in ("completed", "failed", "interrupted"):
                extra = f" in {self._elapsed(stage)}"
            elif status == "running" and info.get("resumed"):
                extra = " (resuming)"
            self.console.print(f"[{STYLE.get(status, '')}]{ICON.get(status, ' ')} {stage}[/] [dim]{self.kinds[stage]}"
                               f"[/] {status}{extra}", highlight=False)

    def _print_summary(self, log: str | None) -> None:
        """A stage may leave `summary.txt` (e.g. data_filter's drop table, select_sft's ranking) for the terminal."""
        summary = Path(log).parent / "summary.txt" if log else None
        if summary is not None and summary.exists():
            from rich.text import Text

            text = Text.from_ansi(summary.read_text(encoding="utf-8", errors="replace"))
            (self._live.console if self._live is not None else self.console).print(text)

    def _elapsed(self, stage: str) -> str:
        info = self.info[stage]
        if "started" not in info:
            return ""
        secs = (info.get("ended") or time.time()) - info["started"]
        return f"{secs:.1f}s" if secs < 120 else f"{int(secs // 60)}m{int(secs % 60):02d}s"

    def _render(self):
        from rich.text import Text
        from rich.tree import Tree

        tree = Tree(Text(f"run {self.run_id}", style="bold"))
        nodes = {}
        for name in self.order:
            parents = [d for d in self.deps.get(name, []) if d in nodes]
            st = self.status[name]
            label = Text()
            label.append(f"{ICON.get(st, ' ')} {name} ", style=STYLE.get(st, ""))
            label.append(f"({self.kinds[name]}) ", style="dim")
            label.append(st, style=STYLE.get(st, ""))
            el = self._elapsed(name)
            if el:
                label.append(f"  {el}", style="dim")
            if st == "running":
                for line in _tail(self.info[name].get("log")):
                    label.append(f"\n  {line[-110:]}", style="dim")
            # a stage hangs under its last dependency: the tree reads like the DAG
            nodes[name] = (nodes[parents[-1]] if parents else tree).add(label)
        return tree


def print_failure(console, run_id: str, state: dict, resume_cmd: str) -> None:
    from rich.markup import escape
    from rich.panel import Panel

    from ringctl.pipeline.stage_main import ERROR_FILE

    failed = [n for n in state["order"] if state["stages"][n]["status"] in ("failed", "interrupted")]
    body = []
    for n in failed:
        st = state["stages"][n]
        body.append(f"[bold]{n}[/] {st['status']}")
        log = Path(st["stage_dir"] or "") / "stage.log"
        error = Path(st["stage_dir"] or "") / ERROR_FILE
        message = error.read_text(encoding="utf-8", errors="replace").strip() if error.is_file() else ""
        if message:  # the stage's error message; its traceback is in the log
            for line in message.splitlines()[:12]:
                body.append(f"  [red]{escape(line[:300])}[/]")
            body.append(f"  log (with the traceback): {log}")
            continue
        for line in _tail(str(log), 8):
            body.append(f"  [dim]{escape(line[-150:])}[/]")
        body.append(f"  log: {log}")
    body.append("")
    body.append(f"Continue with:  [bold]{resume_cmd}[/]")
    title = "interrupted" if state["status"] == "interrupted" else "stage failed"
    console.print(Panel("\n".join(body), title=f"run {run_id} {title}", border_style="red", expand=False))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
