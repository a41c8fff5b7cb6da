"""The protos are the contract: buf lint (STANDARD) and buf format are clean, and the committed
stubs equal a fresh generation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _buf() -> str:
    buf = shutil.which("buf")
    assert buf, "the buf CLI is not on PATH: run the tests with ./scripts/test.sh, which installs it"
    return buf


def test_buf_lint_is_clean() -> None:
    result = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_is_clean() -> None:
    result = subprocess.run(
        [_buf(), "format", "--diff", "--exit-code", "protos"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_stubs_match_a_fresh_generation() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/generate_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
