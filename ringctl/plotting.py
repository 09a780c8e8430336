"""Figures written next to a stage's outputs (matplotlib, headless): one place for the backend and the saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def axes(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """(figure, axes) on the non-interactive Agg backend (stages run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=120)


def save(fig: Any, path: Path | str) -> Path:
    """Lay out, write (creating the folder) and close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
