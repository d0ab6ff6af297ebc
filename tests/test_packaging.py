"""The built wheel carries the files TraceHub reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_schema_and_styles(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)  # fmt: skip
    wheel = next(tmp_path.glob("tracehub-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tracehub/sql/schema.sql" in names
    assert "tracehub/tui/app.tcss" in names
    styles = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tracehub").rglob("*.tcss")}
    assert styles <= names
