"""Profiling the service under the pair load: py-spy, else pyinstrument, else cProfile.

py-spy samples the running process from outside (no code change, native speed); install it
with `.tools/bin/uv tool install py-spy` or `uv tool install py-spy` (not into .venv: `dev.py` syncs the
environment exactly from uv.lock and would remove it). pyinstrument is used when importable
(`uv run --with pyinstrument python bench/run.py --profile`). cProfile, from the standard library,
is the fallback: it slows the service down several times and attributes time per function only.
"""

from __future__ import annotations

import pstats
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

INSTALL_HINT = "for py-spy: `.tools/bin/uv tool install py-spy` (or `uv tool install py-spy`)"


def py_spy_path() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    for candidate in (Path.home() / ".local" / "bin" / "py-spy", Path(sys.prefix) / "bin" / "py-spy"):
        if candidate.exists():
            return str(candidate)
    return None


def choose(requested: str) -> str:
    """The profiler to use: the requested one when available, else the best available."""
    available = {
        "py-spy": py_spy_path() is not None,
        "pyinstrument": find_spec("pyinstrument") is not None,
        "cprofile": True,
    }
    if requested != "auto":
        if not available[requested]:
            raise SystemExit(f"bench: {requested} is not available; {INSTALL_HINT}")
        return requested
    return next(name for name in ("py-spy", "pyinstrument", "cprofile") if available[name])


@dataclass(frozen=True)
class Profiler:
    name: str
    output: Path

    def wrap(self) -> list[str]:
        """The command prefix that runs the service under this profiler ([] for py-spy: it attaches)."""
        if self.name == "cprofile":
            return [sys.executable, "-m", "cProfile", "-o", str(self.output)]
        if self.name == "pyinstrument":
            return [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(self.output)]
        return []

    def attach(self, pid: int, *, seconds: float, log: Path) -> subprocess.Popen[bytes] | None:
        """Start py-spy on `pid` (and its worker processes) for `seconds`."""
        if self.name != "py-spy":
            return None
        path = py_spy_path()
        assert path is not None
        command = [
            path,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--full-filenames",
            "--gil",
            "--rate",
            "250",
        ]
        command += [
            "--duration",
            str(max(1, round(seconds))),
            "--format",
            "raw",
            "--output",
            str(self.output),
        ]
        with log.open("wb") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


# What a frame's file belongs to, for the summary by package.
_SITE = re.compile(r"site-packages/([A-Za-z0-9_]+)")
_STDLIB = re.compile(r"python3\.\d+/([A-Za-z0-9_]+)")


def component(filename: str) -> str:
    if filename == "~":
        return "builtins (C)"
    if "partner_gateway" in filename:
        return "partner_gateway"
    if "gwbench" in filename:
        return "bench"
    match = _SITE.search(filename)
    if match:
        return match.group(1)
    match = _STDLIB.search(filename)
    if match:
        return f"stdlib {match.group(1).removesuffix('.py')}"
    return filename.rsplit("/", 1)[-1] or "?"


_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _frame(raw: str) -> tuple[str, str]:
    match = _FRAME.match(raw.strip())
    return (match.group(1), match.group(2)) if match else (raw.strip(), "")


def summarize_collapsed(path: Path, top: int = 15) -> str:
    """Self time per function and self/inclusive time per package, from py-spy's raw output."""
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    incl_pkg: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(part) for part in stack.split(";")]
        frames = [(fn, file) for fn, file in frames if file]  # drop process/thread labels
        if not frames:
            continue
        total += count
        leaf_fn, leaf_file = frames[-1]
        self_fn[_label(leaf_fn, leaf_file)] += count
        self_pkg[component(leaf_file)] += count
        for pkg in {component(file) for _, file in frames}:
            incl_pkg[pkg] += count
        for name in {_label(fn, file) for fn, file in frames}:
            incl_fn[name] += count
    text = _format(total, self_fn, self_pkg, incl_pkg, top, unit="samples of the thread holding the GIL")
    # Inclusive time of the functions below the server's scaffolding (which is on every stack).
    inner = [(fn, n) for fn, n in incl_fn.most_common() if n < 0.8 * total][: top + 5]
    lines = ["", "inclusive time by function (what a request spends its CPU in)"]
    lines += [f"  {100 * n / total:5.1f} %  {fn}" for fn, n in inner]
    return text + "\n" + "\n".join(lines)


def _label(fn: str, file: str) -> str:
    return f"{fn} ({component(file)}: {file.rsplit('/', 1)[-1]})"


def summarize_cprofile(path: Path, top: int = 15) -> str:
    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    for (file, _line, fn), (_cc, _nc, tottime, _cumtime, _callers) in raw.items():
        micros = int(tottime * 1e6)
        self_fn[_label(fn, file)] += micros
        self_pkg[component(file)] += micros
    total = sum(self_pkg.values())
    return _format(total, self_fn, self_pkg, None, top, unit="µs of CPU (cProfile inflates small calls)")


def _format(
    total: int,
    self_fn: Counter[str],
    self_pkg: Counter[str],
    incl_pkg: Counter[str] | None,
    top: int,
    *,
    unit: str,
) -> str:
    if total == 0:
        return "no samples"
    lines = [
        f"{total} {unit}",
        "",
        "self time by package" + (" (inclusive: on the stack)" if incl_pkg else ""),
    ]
    for pkg, n in self_pkg.most_common(top):
        inclusive = f"   incl {100 * incl_pkg[pkg] / total:5.1f} %" if incl_pkg is not None else ""
        lines.append(f"  {100 * n / total:5.1f} %  {pkg:<28}{inclusive}")
    if incl_pkg is not None:
        rest = [
            (pkg, n) for pkg, n in incl_pkg.most_common(top) if pkg not in dict(self_pkg.most_common(top))
        ]
        lines += [f"  {'':7}  {pkg:<28}   incl {100 * n / total:5.1f} %" for pkg, n in rest]
    lines += ["", "self time by function"]
    lines += [f"  {100 * n / total:5.1f} %  {fn}" for fn, n in self_fn.most_common(top)]
    return "\n".join(lines)


def summarize(profiler: Profiler) -> str:
    if not profiler.output.exists() or profiler.output.stat().st_size == 0:
        return f"{profiler.name} wrote no profile"
    if profiler.name == "py-spy":
        return summarize_collapsed(profiler.output)
    if profiler.name == "cprofile":
        return summarize_cprofile(profiler.output)
    return _head(profiler.output.read_text(errors="replace").splitlines(), 60)


def _head(lines: Iterable[str], n: int) -> str:
    return "\n".join(list(lines)[:n])
