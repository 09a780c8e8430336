"""Tables left for the terminal stay whole: on a pipe (a CI log) a table prints at its own width, never re-wrapped
to 80 columns; in a narrow terminal ($COLUMNS) its columns fold. Checked on the real commands: a stage's table
through `ringctl run`'s display (stderr) and `ringctl eval`'s table (stdout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.helpers import ringctl, write

TOP, HEAD_RULE, BOTTOM = "┏┓", "┡┩", "└┘"


def table_block(text: str, title: str) -> list[str]:
    """The lines of the table titled `title` (title lines, borders, rows) in `text`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    end = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith("└"))
    return lines[start:end + 1]


def assert_whole(block: list[str], columns: int, max_width: int | None = None) -> int:
    """Every line has the table's display width, every border and row has its box-drawing characters at both ends
    and one separator per column: nothing re-wrapped or cut. Returns the width."""
    widths = {cell_len(line) for line in block}
    assert len(widths) == 1, "\n".join(f"{cell_len(x):4d} {x}" for x in block)
    width = widths.pop()
    assert max_width is None or width <= max_width, width
    box = [line for line in block if line[:1] in "┏┃┡│└"]
    assert box[0][0] + box[0][-1] == TOP and box[-1][0] + box[-1][-1] == BOTTOM
    assert sum(line[0] + line[-1] == HEAD_RULE for line in box) == 1
    for line in box:
        bar = {"┃": "┃", "│": "│"}.get(line[0])
        if bar:
            assert line[-1] == bar and line.count(bar) == columns + 1, line
        else:  # a border: one joint per column boundary
            assert sum(line.count(c) for c in "┳╇┴") == columns - 1, line
    assert "…" not in "".join(block)
    return width


TABLE_RECIPE = """
name: tables
stages:
  wide:
    kind: toy_stages.table
    columns: 5
"""


@pytest.mark.parametrize("columns_env", [None, "60", "100"])
def test_a_stage_table_through_the_run_display(tmp_path, columns_env):
    recipe = write(tmp_path / "r.yaml", TABLE_RECIPE)
    env = {"COLUMNS": columns_env} if columns_env else {}
    proc = ringctl("run", recipe, "--workdir", tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    block = table_block(proc.stderr, "a table wider than 80 columns")
    width = assert_whole(block, columns=6, max_width=int(columns_env) if columns_env else None)
    if columns_env is None:  # a pipe: the table's own width (6 columns of 29 characters), not 80
        assert width > 160
        stored = next((tmp_path / "runs").glob("*/wide/summary.txt")).read_text().rstrip("\n").splitlines()
        assert block == stored[:len(block)]
    else:
        assert width == int(columns_env)  # folded to the terminal's width
    assert "a note under the table" in proc.stderr


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from ringctl.train.config import TinyModelConfig
    from ringctl.train.models import save_tiny

    class Cfg:
        tiny = TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                               moe_intermediate_size=32, intermediate_size=64, num_experts=2, num_experts_per_tok=1,
                               max_position_embeddings=256)
        attn_implementation = "sdpa"

    # a long directory name: the checkpoint's column header is wider than an 80-column table allows
    return save_tiny(Cfg, tmp_path_factory.mktemp("ckpt") / ("a-checkpoint-with-a-long-name-" * 3 + "end"), seed=0)


@pytest.mark.parametrize("columns_env", [None, "60"])
def test_eval_table_on_stdout(tmp_path, tiny_ckpt, columns_env):
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"q": f"{a} plus {a}?", "a": 2 * a, "id": f"q{a}"}) + "\n" for a in (1, 2)))
    env = {"COLUMNS": columns_env} if columns_env else {}
    proc = ringctl("eval", tiny_ckpt, f"{tiny_ckpt}/", "--file", data, "--prompt-field", "q", "--answer-field", "a",
                   "--id-field", "id", "--domain", "math", "--n", "1", "--max-new-tokens", "2",
                   "--out", tmp_path / "out", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    block = proc.stdout.rstrip("\n").splitlines()  # stdout is the table alone
    assert block == table_block(proc.stdout, "pass@1 (%) ± standard error over problems")
    # a row per checkpoint: the checkpoint column and the benchmark's
    width = assert_whole(block, columns=2, max_width=int(columns_env) if columns_env else None)
    if columns_env is None:
        assert width > len(str(tiny_ckpt)) and str(tiny_ckpt) in proc.stdout  # own width: names whole
