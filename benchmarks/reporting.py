"""What every benchmark report records of its command line (imported by the scripts here)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as JSON: a path inside the repository relative to its root, one outside it
    by its last part only, so a report names no folder of the machine it ran on."""

    def shown(v: Any) -> Any:
        if not isinstance(v, Path):
            return v
        p = v.resolve()
        return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else f"(outside)/{p.name}"

    return {k: shown(v) for k, v in vars(args).items()}
