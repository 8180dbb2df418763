#!/usr/bin/env python3
"""Bootstrap and run partner-gateway with nothing but Python 3.11+ (standard library only).

    python3 scripts/dev.py serve [--host H] [--port P]   run the service (--local unless DATABASE_URL is set)
    python3 scripts/dev.py test [pytest args]            run the whole test suite
    python3 scripts/dev.py lint                          ruff + mypy --strict
    python3 scripts/dev.py bench [args]                  the benchmark (see bench/README section)
    python3 scripts/dev.py bench-instructions [args]     instructions per BetLink request (valgrind)
    python3 scripts/dev.py <any partner-gateway command> e.g. migrate, purge, bidpaw-sandbox, certify

The first run installs uv into .tools/ (from PyPI) unless uv is already on PATH, then creates
.venv/ from the committed uv.lock; later runs only check that .venv/ matches the lock.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
VENV = ROOT / ".venv"
UV_VERSION = "0.13.9"
LOCAL_COMMANDS = ("serve", "migrate", "purge", "reconcile", "wallet-report")


def _uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    uv = TOOLS / "bin" / "uv"
    if not uv.exists():
        print(f"dev.py: installing uv {UV_VERSION} into {TOOLS}", file=sys.stderr)
        venv.create(TOOLS, with_pip=True)
        pip = [
            str(TOOLS / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]
        subprocess.run([*pip, f"uv=={UV_VERSION}"], check=True)
    return str(uv)


def _sync() -> None:
    command = [_uv(), "sync", "--locked", "--quiet", "--python", sys.executable]
    # The platform's certificate store, as pip uses it (machines behind a TLS-inspecting proxy).
    env = {"UV_SYSTEM_CERTS": "1", **os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV)}
    subprocess.run(command, check=True, cwd=ROOT, env=env)


def _database_configured() -> bool:
    """DATABASE_URL in the environment or in the .env file that partner-gateway will read."""
    if "DATABASE_URL" in os.environ:
        return True
    dotenv = Path.cwd() / ".env"
    lines = dotenv.read_text().splitlines() if dotenv.is_file() else []
    return any(line.strip().removeprefix("export ").startswith("DATABASE_URL=") for line in lines)


def _run(*command: str) -> int:
    return subprocess.run(command, cwd=ROOT).returncode


def _exec(program: str, *args: str) -> None:
    os.execv(program, [program, *args])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    _sync()
    bin_dir = VENV / "bin"
    command, rest = argv[0], argv[1:]
    if command == "test":
        # pytest keeps the newest three runs under one temporary root per user and deletes older
        # ones, even those of a run still going in another checkout: one root per checkout.
        tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(Path(tempfile.gettempdir(), f"pg-tests-{tag}")))
        Path(os.environ["PYTEST_DEBUG_TEMPROOT"]).mkdir(exist_ok=True)
        _exec(str(bin_dir / "python"), "-m", "pytest", *rest)
    if command == "lint":
        checks = [
            [str(bin_dir / "ruff"), "check", "."],
            [str(bin_dir / "ruff"), "format", "--check", "."],
            [str(bin_dir / "mypy")],
        ]
        return max(_run(*check) for check in checks)
    if command == "bench":
        _exec(str(bin_dir / "python"), str(ROOT / "bench" / "run.py"), *rest)
    if command == "bench-instructions":
        _exec(str(bin_dir / "python"), str(ROOT / "bench" / "instructions.py"), *rest)
    if command in LOCAL_COMMANDS and "--local" not in rest and not _database_configured():
        rest = ["--local", *rest]  # the development machine: an embedded PostgreSQL, asked for
    _exec(str(bin_dir / "partner-gateway"), command, *rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
