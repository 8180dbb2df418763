"""The README's *Try it* commands, run as written against a real `serve` and BidPaw sandbox, give
answers of the shape the README shows beneath them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BETLINK_KEY, GATEWAY_KEY
from tests.processes import bidpaw_sandbox, free_port, serve, wait_listening, wait_ready
from tests.system import require_programs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TRY_IT = README[README.index("### Try it") : README.index("<!-- first-hour: end -->")]


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", TRY_IT, re.DOTALL)


def shown_outputs(block: str) -> list[dict[str, object]]:
    """The JSON answers the README shows as `# {...}` comments."""
    return [
        json.loads(line[2:]) for line in block.splitlines() if line.startswith("# {") and "..." not in line
    ]


def shown_keys(block: str) -> list[list[str]]:
    """The keys of every `# {...}` answer, also of those abbreviated with `...`."""
    return [re.findall(r'"(\w+)":', line) for line in block.splitlines() if line.startswith("# {")]


@pytest.fixture(scope="module")
def service(database_url: str) -> Iterator[str]:
    require_programs({"curl": "curl"})  # the README's commands are curl lines
    sandbox_port, port = free_port(), free_port()
    bidpaw = {"BIDPAW_CLIENT_ID": "casino-1", "BIDPAW_SECRET_KEY": "sandbox-secret"}
    sandbox = bidpaw_sandbox(
        sandbox_port,
        client_id=bidpaw["BIDPAW_CLIENT_ID"],
        secret_key=bidpaw["BIDPAW_SECRET_KEY"],
        restricted_countries="US",  # as the README starts it
    )
    started = time.monotonic()
    proc = serve(
        database_url,
        port,
        BETLINK_OPERATOR_ID="local-operator",  # what the README's bodies name
        BETLINK_REDIRECT_URL="http://localhost:8000/",
        BIDPAW_API_URL=f"http://127.0.0.1:{sandbox_port}",
        BIDPAW_CLIENT_ID=bidpaw["BIDPAW_CLIENT_ID"],
        BIDPAW_SECRET_KEY=bidpaw["BIDPAW_SECRET_KEY"],
        BIDPAW_GAME_ID="game-1",
    )
    try:
        wait_listening(f"http://127.0.0.1:{sandbox_port}", sandbox)
        wait_ready(f"http://127.0.0.1:{port}", proc)
        print(f"[readme] serve ready in {time.monotonic() - started:.1f} s", file=sys.stderr)  # noqa: T201
        yield f"127.0.0.1:{port}"
    finally:
        for process in (proc, sandbox):
            process.terminate()
            process.wait(timeout=20)


def run(block: str, service: str) -> str:
    """A README block in bash, against the test service, with the keys already set (the README's
    `GW=gw_...` lines are placeholders to fill in)."""
    script = "\n".join(line for line in block.splitlines() if not re.match(r"(GW|BL)=\w+_\.\.\.", line))
    script = script.replace("localhost:8000", service)
    env = {**os.environ, "GW": GATEWAY_KEY, "BL": BETLINK_KEY}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def answers(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in re.findall(r"^\{.*\}$", stdout, re.MULTILINE)]


class TestTryIt:
    def test_the_launch_token_command_answers_as_shown(self, service: str) -> None:
        block = next(b for b in sh_blocks() if "GW=gw_" in b and "betlink/session" in b and "LT=" not in b)
        (got,) = answers(run(block, service))
        (shown,) = shown_outputs(block)
        assert list(got) == list(shown)
        assert (got["userId"], got["operatorId"]) == (shown["userId"], shown["operatorId"])

    def test_the_one_command_exchange_answers_as_shown(self, service: str) -> None:
        block = next(b for b in sh_blocks() if "LT=$(" in b)
        (got,) = answers(run(block, service))
        assert list(got) == shown_keys(block)[0]
        assert got["status"] == "AUTHENTICATED"
        assert got["requestId"] == "92e02ae9-a2a3-48e2-af0e-940aec4bbcfb"

    def test_the_helper_prints_what_the_readme_shows(self, service: str) -> None:
        block = next(b for b in sh_blocks() if "try_betlink.py" in b)
        command = block.splitlines()[0] + f" --url http://{service}"
        stdout = run(command, service)
        calls = [line.split(" -> ")[0] for line in stdout.splitlines() if " -> " in line]
        shown = [line[2:].split(" -> ")[0] for line in block.splitlines() if " -> " in line]
        assert calls == shown
        assert "identical to the first answer: True" in stdout
        assert '{"active":true,"userId":"u1"' in stdout

    def test_the_bidpaw_walkthrough_answers_as_shown(self, service: str) -> None:
        block = next(b for b in sh_blocks() if "bidpaw/open-session" in b)
        assert "--restricted-countries US" in block
        assert "BIDPAW_GAME_ID=game-1" in block
        curls = block[block.index("curl -s -w '\\n' -G") :]
        shown = [line[2:] for line in curls.splitlines() if line.startswith("# {")]
        got = answers(run(curls, service))
        assert len(got) == len(shown) == 3
        for answer, expected in zip(got, shown, strict=True):
            if "..." not in expected:
                assert answer == json.loads(expected)
                continue
            start, end = expected.split("...", 1)[0], expected.rsplit("...", 1)[1]
            assert list(answer) == ["iframeURL"]
            assert json.dumps(answer, separators=(",", ":")).startswith(start), (answer, start)
            assert json.dumps(answer, separators=(",", ":")).endswith(end), (answer, end)
