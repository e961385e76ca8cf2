"""The benchmarks' figures, written whole or not at all."""

from __future__ import annotations

from pathlib import Path

from tinyship.runtime.files import write_atomic


def save_figure(fig, path: Path) -> None:
    """Lay out fig, write it to path as PNG (atomically) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
