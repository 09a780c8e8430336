"""Terminal display of a pipeline run: the DAG as a tree with each stage's state and elapsed time (rich Live),
or plain status lines on stderr when stderr is not a terminal or --json is given; and the tables that commands and
stages leave for the terminal.

Every printed line stays whole. A terminal (or $COLUMNS) keeps its width: a table folds its columns to fit it,
never cutting a cell. Anything else (a pipe, a file, a CI log) gets no width limit, so a table prints at its own
width: rich would otherwise assume 80 columns and re-wrap rows in the middle of their box-drawing characters. A
stage's table travels as data (`TableDoc`, written by `write_summary` as summary.json beside summary.txt), so the
run display renders it for the terminal it prints on, not for the width the stage guessed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WIDE = 100_000  # the width of a console that is not a terminal: "no limit", no line is wrapped
SUMMARY_TABLE = "summary.json"  # a stage's table for the terminal, as data (TableDoc)
SUMMARY_TEXT = "summary.txt"  # the same table as text (at its own width); or a plugin's free-form text

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


def out_console(stderr: bool = False, file: Any = None, **options: Any):
    """The console for what a command leaves on the terminal: a terminal, or $COLUMNS, keeps its width; a pipe or
    a file gets no width limit (every line whole, a table at its own width). `options`: rich Console's."""
    from rich.console import Console

    con = Console(stderr=stderr, file=file, **options)
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        con = Console(stderr=stderr, file=file, width=WIDE, **options)
    return con


LABEL_KEEP = 24  # characters of a label column kept on one line (e.g. "sft.checkpoints/epoch-10")


@dataclass
class TableDoc:
    """A table for the terminal, as data: cells are rich markup; `notes` are dim lines printed under it."""

    title: str
    columns: list[tuple[str, str]]  # (header, justify: left | right)
    rows: list[list[str]]
    row_styles: list[str | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label_column: bool = False  # the first column names the rows: its names stay whole up to LABEL_KEEP characters

    @classmethod
    def from_json(cls, doc: dict) -> TableDoc:
        return cls(title=doc["title"], columns=[(str(h), str(j)) for h, j in doc["columns"]], rows=doc["rows"],
                   row_styles=doc.get("row_styles") or [], notes=doc.get("notes") or [],
                   label_column=bool(doc.get("label_column")))

    def table(self):
        """The rich Table: every column folds (a narrow terminal wraps a cell's text inside its column); a label
        column keeps its names whole up to LABEL_KEEP characters (a longer one folds like any cell)."""
        from rich.cells import cell_len
        from rich.table import Table

        table = Table(title=self.title)
        keep = None
        if self.label_column and self.columns:
            labels = [self.columns[0][0], *(r[0] for r in self.rows if r)]
            keep = min(max(cell_len(str(c)) for c in labels), LABEL_KEEP)
        for i, (header, justify) in enumerate(self.columns):
            table.add_column(header, justify=justify, overflow="fold",  # type: ignore[arg-type]
                             min_width=keep if i == 0 else None)
        for i, cells in enumerate(self.rows):
            table.add_row(*cells, style=self.row_styles[i] if i < len(self.row_styles) else None)
        return table


def print_table(doc: TableDoc, console: Any = None) -> None:
    """Print `doc` on `console` (default: `out_console()`), folded to a terminal's width or at its own width."""
    console = console or out_console()
    console.print(doc.table())
    for note in doc.notes:
        console.print(note, style="dim", soft_wrap=True, highlight=False)


def table_text(doc: TableDoc) -> str:
    """`doc` as plain text at its own width (no colour): for files and logs."""
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    print_table(doc, Console(file=buf, width=WIDE, force_terminal=False, color_system=None))
    return buf.getvalue()


def write_summary(stage_dir: Path, doc: TableDoc) -> str:
    """Leave `doc` for the run display (summary.json) and for people reading the run directory (summary.txt);
    returns the text."""
    from ringctl import artifacts

    text = table_text(doc)
    artifacts.atomic_write_text(Path(stage_dir) / SUMMARY_TEXT, text)
    artifacts.atomic_write_text(Path(stage_dir) / SUMMARY_TABLE, json.dumps(asdict(doc), ensure_ascii=False))
    return text


def print_summary(stage_dir: Path, console: Any) -> None:
    """A stage's summary on `console`: its table (summary.json) rendered for this console, else its summary.txt
    printed line by line as it is (never re-wrapped)."""
    table, text = Path(stage_dir) / SUMMARY_TABLE, Path(stage_dir) / SUMMARY_TEXT
    if table.is_file():
        try:
            print_table(TableDoc.from_json(json.loads(table.read_text(encoding="utf-8"))), console)
            return
        except (ValueError, KeyError, TypeError):
            pass  # not a table after all: its text, as below
    if text.is_file():
        from rich.text import Text

        console.print(Text.from_ansi(text.read_text(encoding="utf-8", errors="replace").rstrip("\n")),
                      soft_wrap=True)


class RunDisplay:
    """Observer for the runner. Use as a context manager around `Runner.execute()`."""

    def __init__(self, run_id: str, order: list[str], kinds: dict[str, str], deps: dict[str, list[str]],
                 live: bool | None = None):
        self.console = out_console(stderr=True)
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
        """A stage may leave a table (summary.json, e.g. select_sft's ranking, evaluate's scores) or text
        (summary.txt) for the terminal, in its stage directory."""
        if log:
            print_summary(Path(log).parent, self._live.console if self._live is not None else self.console)

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

    from ringctl.artifacts import ERROR_FILE

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
