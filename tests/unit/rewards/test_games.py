"""Logic games and arithmetic: generated tasks are solved by their own solution, mistakes score 0."""

import random

import pytest

from ringctl.rewards import score, score_detailed, verify_reference
from ringctl.rewards.games import GAMES, arc, countdown, maze, sudoku


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_generated_solutions_score_one(game, difficulty):
    module = __import__(f"ringctl.rewards.games.{game}", fromlist=["generate"])
    for seed in range(5):
        task = module.generate(random.Random(seed), difficulty)
        res = score_detailed(game, task.solution(), task.answer)
        assert res.score == 1.0, (task, res)
        assert verify_reference(game, task.answer) == (True, "ok")
        assert score(game, task.solution().replace(task.final, task.final + "9"), task.answer) == 0.0


def test_generation_is_seeded():
    assert countdown.generate(random.Random(3), 1) == countdown.generate(random.Random(3), 1)
    assert sudoku.generate(random.Random(3), 3) == sudoku.generate(random.Random(3), 3)


def test_arithmetic_number_forms():
    assert score("arithmetic", r"\boxed{12.0}", "12") == 1.0
    assert score("arithmetic", r"\boxed{\frac{3}{4}}", "0.75") == 1.0
    assert score("arithmetic", r"\boxed{twelve}", "12") == 0.0


def test_countdown_rules():
    ref = {"numbers": [3, 5, 8], "target": 13}
    assert score("countdown", r"\boxed{5+8}", ref) == 1.0
    assert score("countdown", r"\boxed{(8-3)+8}", ref) == 0.0  # 8 used twice
    assert score("countdown", r"\boxed{5+8=13}", ref) == 1.0  # an equation: the left side counts
    assert score("countdown", r"\boxed{13}", ref) == 0.0  # 13 is not a given number
    assert "not 13" in score_detailed("countdown", r"\boxed{3*5}", ref).reason
    assert score("countdown", r"\boxed{__import__('os')}", ref) == 0.0
    assert score("countdown", r"\boxed{8/(5-5)}", ref) == 0.0
    assert verify_reference("countdown", {"numbers": [1, 1], "target": 50})[0] is False


def test_countdown_solver_finds_divisions():
    steps = countdown.solve([100, 4, 7], 32)
    assert steps is not None and steps[-1].endswith("=32")


def test_sudoku_rules():
    puzzle = "1200/3400/0000/0000"
    good = "1243/3421/2134/4312"
    assert score("sudoku", rf"\boxed{{{good}}}", {"puzzle": puzzle}) == 1.0
    assert score("sudoku", r"\boxed{1243/3421/2134/4321}", {"puzzle": puzzle}) == 0.0  # column 3 repeats 2
    assert score("sudoku", r"\boxed{2143/3412/1234/4321}", {"puzzle": puzzle}) == 0.0  # clue changed
    assert verify_reference("sudoku", {"puzzle": "1100/0000/0000/0000"})[0] is False


def test_maze_rules():
    ref = {"grid": ["s01", "001", "10g"]}
    assert score("maze", r"\boxed{drrd}", ref) == 0.0  # second r runs into the wall at (1, 2)
    assert score("maze", r"\boxed{rdrd}", ref) == 0.0  # same wall
    assert score("maze", r"\boxed{drdr}", ref) == 1.0
    assert score("maze", r"\boxed{R D D R}", ref) == 1.0
    assert score("maze", r"\boxed{l}", ref) == 0.0
    assert score("maze", r"\boxed{rd}", ref) == 0.0  # does not reach g
    assert maze.shortest_path(ref["grid"]) in ("drdr", "rddr")
    assert verify_reference("maze", {"grid": ["s1", "1g"]})[0] is False


def test_arc_exact_grid():
    ref = {"grid": [[6, 5], [8, 7]]}
    assert score("arc", r"\boxed{65/87}", ref) == 1.0
    assert score("arc", "\\boxed{6 5\n8 7}", ref) == 1.0
    assert score("arc", r"\boxed{65/78}", ref) == 0.0
    assert score("arc", r"\boxed{65}", ref) == 0.0
    assert arc.RULES["rotate right"][1]([[1, 2], [3, 4]]) == [[3, 1], [4, 2]]
