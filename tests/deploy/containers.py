"""podman for the deployment tests: its configuration, the base images and the project's image.

No container registry is needed. A base image the Dockerfile or compose file names is used when
the local store has it (pulled earlier, or on a machine with a registry); otherwise a stand-in
is built once from Debian's packages (mmdebstrap + `podman import`) and kept in the store, so a
rerun on the same machine starts from the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from tests.deploy.conftest import note
from tests.system import require_programs

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standin"
STATE = Path("/var/tmp/partner-gateway-podman")  # podman's configuration, stable across runs
# One tag per checkout: worktrees testing at once on one machine never run each other's image.
GATEWAY_IMAGE = f"localhost/partner-gateway:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}"
PYTHON_IMAGE = "docker.io/library/python:3.12-slim"
UV_IMAGE = "ghcr.io/astral-sh/uv:0.13.9"
POSTGRES_IMAGE = "docker.io/library/postgres:18"
PYTHON_STANDIN = "localhost/standin/python:bookworm"
# Tagged by its entrypoint: a changed entrypoint builds a new stand-in.
_ENTRYPOINT_HASH = hashlib.sha256((STANDIN / "postgres-entrypoint.sh").read_bytes()).hexdigest()[:10]
POSTGRES_STANDIN = f"localhost/standin/postgres:15-bookworm-{_ENTRYPOINT_HASH}"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

# Each line works around a limit of this kind of machine, which runs podman without systemd:
# open-file and process limits, runc, cgroupfs, file-based events and netavark set explicitly.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"
"""


def timing(label: str, started: float) -> None:
    note(f"{label}: {time.monotonic() - started:.1f} s")


@cache
def podman_env() -> dict[str, str]:
    """The environment every podman call (and podman's API service) runs with."""
    started = time.monotonic()
    require_programs(
        {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap", "iptables": "iptables"},
        "netavark",
        "aardvark-dns",
    )
    timing("podman available", started)
    STATE.mkdir(parents=True, exist_ok=True)
    conf = STATE / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} failed ({result.returncode}):\n{result.stderr}")
    return result


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def _mmdebstrap(target: Path, packages: Sequence[str], *options: str) -> None:
    slim = ["--dpkgopt=path-exclude=/usr/share/" + part for part in ("doc/*", "man/*", "locale/*", "info/*")]
    command = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        "--mode=root",
        f"--include={','.join(packages)}",
        *slim,
        # This machine reaches PyPI through a TLS-intercepting proxy: trust the host's CA bundle.
        "--customize-hook=copy-in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs",
        *options,
        "bookworm",
        str(target),
        DEBIAN_MIRROR,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def _import(tarball: Path, name: str, *changes: str) -> None:
    podman("import", *(f"--change={change}" for change in changes), str(tarball), name, timeout=180)


@cache
def python_base() -> str:
    """`python:3.12-slim`, or a Debian bookworm stand-in (its Python 3.11 satisfies the project)."""
    if image_exists(PYTHON_IMAGE):
        return PYTHON_IMAGE
    if not image_exists(PYTHON_STANDIN):
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            tarball = Path(tmp) / "python.tar"
            _mmdebstrap(tarball, ["python3", "ca-certificates"])
            _import(
                tarball,
                PYTHON_STANDIN,
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                'CMD ["python3"]',
            )
        timing("stand-in python base built (mmdebstrap)", started)
    return PYTHON_STANDIN


def _uv_binary() -> tuple[Path, str]:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")  # dev.py installs it there
    version = subprocess.run([found, "--version"], check=True, capture_output=True, text=True).stdout
    return Path(found), version.split()[1]


@cache
def uv_image() -> str:
    """uv's image, or a `FROM scratch` stand-in holding the uv binary of the `uv` wheel."""
    if image_exists(UV_IMAGE):
        return UV_IMAGE
    binary, version = _uv_binary()
    name = f"localhost/standin/uv:{version}"
    if not image_exists(name):
        with tempfile.TemporaryDirectory() as tmp:
            tarball = Path(tmp) / "uv.tar"
            with tarfile.open(tarball, "w") as tar:
                tar.add(binary, arcname="uv")
            _import(tarball, name)
    return name


_BACKGROUND = ThreadPoolExecutor(max_workers=1)


@cache
def _postgres_build() -> Future[str]:
    return _BACKGROUND.submit(_postgres_image)


def postgres_image() -> str:
    """`postgres:18`, or a stand-in with Debian's PostgreSQL 15 and the same entrypoint contract."""
    return _postgres_build().result(timeout=600)


def _postgres_image() -> str:
    if image_exists(POSTGRES_IMAGE):
        return POSTGRES_IMAGE
    if not image_exists(POSTGRES_STANDIN):
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            tarball = Path(tmp) / "postgres.tar"
            no_cluster = (
                'mkdir -p "$1/etc/postgresql-common/createcluster.d" && '
                'echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/none.conf"'
            )
            _mmdebstrap(
                tarball,
                ["postgresql-15", "postgresql-client-15"],
                f"--customize-hook=copy-in {STANDIN / 'postgres-entrypoint.sh'} /usr/local/bin",
                "--essential-hook=" + no_cluster,
            )
            _import(
                tarball,
                POSTGRES_STANDIN,
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]',
                'CMD ["postgres"]',
                "EXPOSE 5432",
                "STOPSIGNAL SIGINT",
            )
        timing("stand-in postgres image built (mmdebstrap)", started)
    return POSTGRES_STANDIN


def build_args() -> list[str]:
    return ["--build-arg", f"PYTHON_IMAGE={python_base()}", "--build-arg", f"UV_IMAGE={uv_image()}"]


@cache
def gateway_image() -> str:
    """The project's Dockerfile, built in Docker format (the layer cache makes a rebuild quick)."""
    podman_env()  # once, before a second thread needs it
    started = time.monotonic()
    _postgres_build()  # in parallel: the tests need it right after the image
    args = build_args()
    timing("python and uv bases ready", started)
    started = time.monotonic()
    podman("build", "--format", "docker", *args, "-t", GATEWAY_IMAGE, str(ROOT), timeout=600)
    timing("image built", started)
    return GATEWAY_IMAGE


def image_size_mb(name: str) -> float:
    size = podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip()
    return int(size) / 1e6


@contextmanager
def container(name: str, *run_args: str) -> Iterator[str]:
    """`podman run -d` whose container is always removed afterwards."""
    podman("rm", "--force", "--ignore", name, check=False)
    podman("run", "-d", "--name", name, *run_args, timeout=60)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "2", name, check=False, timeout=60)
