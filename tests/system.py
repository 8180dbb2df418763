"""Programs from Debian's packages that some tests start for real (podman, nginx, pgbouncer, chromium).

`require_programs` installs what is missing when it can (root with apt-get, as on CI and the
development machines) and otherwise skips, except under CI (`CI=true`), where a missing program
fails the test: a green CI must never mean "skipped".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

_UPDATED = False


def _install(packages: list[str]) -> None:
    global _UPDATED
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    started = time.monotonic()
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another install may hold dpkg's lock
    if not _UPDATED:
        subprocess.run(["apt-get", *wait, "update", "-qq"], check=True, env=env, timeout=300)
        _UPDATED = True
    command = ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *packages]
    subprocess.run(command, check=True, env=env, timeout=600, stdout=subprocess.DEVNULL)
    print(  # noqa: T201  (timings the brief asks each real-process test to print)
        f"[system] installed {' '.join(packages)} in {time.monotonic() - started:.1f} s", file=sys.stderr
    )


# Debian installs daemons and admin tools (pgbouncer, iptables, nginx) in the sbin directories,
# which a minimal PATH (cron, CI runners, `env -i`) leaves out.
SBIN_DIRECTORIES = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _path_with_sbin() -> None:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join([*parts, *(d for d in SBIN_DIRECTORIES if d not in parts)])


def require_programs(programs: dict[str, str], *extra_packages: str) -> None:
    """Make each program (name → Debian package) available, or skip (fail under CI).

    The sbin directories join PATH first, for this process and the programs it starts.
    """
    _path_with_sbin()
    missing = {package for program, package in programs.items() if shutil.which(program) is None}
    if not missing:
        return
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if can_install:
        _install(sorted(missing | set(extra_packages)))
        still = [program for program in programs if shutil.which(program) is None]
        if not still:
            return
        missing = {programs[program] for program in still}
    reason = f"needs Debian packages {', '.join(sorted(missing))} (apt-get install them, or run as root)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_postgresql_server() -> Path:
    """The bin directory of Debian's newest PostgreSQL server (installed when missing, as above).

    Debian keeps the server programs (initdb, pg_ctl, pg_basebackup) under
    /usr/lib/postgresql/<version>/bin, off PATH.
    """

    def newest() -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
        return found[-1].parent if found else None

    if (bin_dir := newest()) is not None:
        return bin_dir
    if os.geteuid() == 0 and shutil.which("apt-get") is not None:
        _install(["postgresql"])
        if (bin_dir := newest()) is not None:
            return bin_dir
    reason = "needs Debian's PostgreSQL server (apt-get install postgresql, or run as root)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
