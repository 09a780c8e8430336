"""ringctl.display's tables: a console that is not a terminal never re-wraps a line, a narrow one folds the
columns, and a stage's table (summary.json) is rendered for the console that prints it."""

from __future__ import annotations

from io import StringIO

from rich.cells import cell_len
from rich.console import Console

from ringctl.display import WIDE, TableDoc, out_console, print_summary, table_text, write_summary

DOC = TableDoc(title="scores", columns=[("benchmark", "left"), ("reasoning_rl.final/step-000120", "right"),
                                        ("sft.checkpoints/epoch-3", "right")],
               rows=[["gsm8k (n=4, 1319)", "12.5 ± 0.9", "[bold]8.0 ± 0.7[/]"], ["math500 (n=4, 500)", "3.1", "2.0"]],
               row_styles=[None, "bold"], notes=["* a note that is longer than the narrow console is wide"])


def _widths(text: str) -> set[int]:
    return {cell_len(line) for line in text.splitlines() if line[:1] in "┏┃┡│└"}


def test_out_console_has_no_width_limit_off_a_terminal_and_keeps_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert out_console(file=StringIO()).width == WIDE
    monkeypatch.setenv("COLUMNS", "60")
    assert out_console(file=StringIO()).width == 60


def test_table_text_is_the_table_at_its_own_width():
    text = table_text(DOC)
    (width,) = _widths(text)
    assert width > 80 and "reasoning_rl.final/step-000120" in text and "[bold]" not in text
    assert text.rstrip("\n").splitlines()[-1] == DOC.notes[0]


def test_a_stage_summary_is_rendered_for_the_console_that_prints_it(tmp_path):
    text = write_summary(tmp_path, DOC)
    assert (tmp_path / "summary.txt").read_text() == text
    wide, narrow = StringIO(), StringIO()
    print_summary(tmp_path, Console(file=wide, width=WIDE, color_system=None))
    print_summary(tmp_path, Console(file=narrow, width=40, color_system=None))
    assert wide.getvalue() == text
    assert _widths(narrow.getvalue()) == {40} and "…" not in narrow.getvalue()  # folded, nothing cut
    assert DOC.notes[0] in narrow.getvalue()  # a note is one line, whatever the width


def test_a_text_summary_is_printed_line_by_line_never_rewrapped(tmp_path):
    lines = ["┏" + "━" * 100 + "┓", "┃" + " " * 100 + "┃", "└" + "─" * 100 + "┘"]
    (tmp_path / "summary.txt").write_text("\n".join(lines) + "\n")
    out = StringIO()
    print_summary(tmp_path, Console(file=out, width=60, color_system=None))
    assert out.getvalue().splitlines() == lines


def test_a_label_column_keeps_its_width_in_a_narrow_console(tmp_path):
    from dataclasses import replace

    doc = replace(DOC, columns=[("checkpoint", "left"), *DOC.columns[1:]],
                  rows=[["sft.checkpoints/epoch-3", "12.5 ± 0.9", "8.0 ± 0.7"], ["general_rl.final", "3.1", "2.0"]],
                  label_column=True)
    write_summary(tmp_path, doc)  # summary.json keeps the flag
    narrow = StringIO()
    print_summary(tmp_path, Console(file=narrow, width=50, color_system=None))
    assert _widths(narrow.getvalue()) == {50} and "sft.checkpoints/epoch-3" in narrow.getvalue()
    folded = StringIO()
    Console(file=folded, width=50, color_system=None).print(replace(doc, label_column=False).table())
    assert "sft.checkpoints/epoch-3" not in folded.getvalue()  # without it the label folds like the rest
