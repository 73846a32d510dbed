"""What ``rankgate check`` prints: one line per check (``ok``, ``warn`` or ``FAIL``), counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO


@dataclass
class Report:
    out: TextIO
    failed: int = 0
    passed: int = 0
    warned: int = 0
    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def line(self, status: str, what: str, detail: str) -> None:
        self.lines.append((status, what, detail))
        if status == "FAIL":
            self.failed += 1
        elif status == "warn":
            self.warned += 1
        else:
            self.passed += 1
        print(f"{status:<5} {what:<8} {detail}", file=self.out, flush=True)


def shown_path(path: str | Path) -> str:
    """Relative to the working directory when under it: what a person typed."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
