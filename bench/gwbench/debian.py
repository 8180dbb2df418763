"""Programs the bench needs from Debian's packages, installed when missing, as the tests install theirs."""

from __future__ import annotations

import os
import shutil
import subprocess


def ensure(program: str, *, package: str | None = None, tool: str = "bench") -> None:
    """`program` on PATH: `apt-get install`ed as root when missing, else a one-line stop."""
    package = package or program
    if shutil.which(program) is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
        subprocess.run([*apt, "update", "-qq"], check=True, env=env, timeout=300)
        subprocess.run([*apt, "install", "-y", "-qq", package], check=True, env=env, timeout=600)
    if shutil.which(program) is None:
        raise SystemExit(f"{tool}: {program} is missing: apt-get install {package}")
