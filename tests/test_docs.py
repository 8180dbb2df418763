"""The README and .env.example stay true to the settings the code reads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from partner_gateway.config import Settings

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {name.upper() for name in Settings.model_fields}
# What docker-compose.yml reads besides (passwords, ports, images): documented in .env.example too.
COMPOSE_VARIABLES = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))


class TestDocumentedSettings:
    def test_env_example_lists_every_variable(self) -> None:
        listed = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
        assert listed == VARIABLES | COMPOSE_VARIABLES

    def test_readme_configuration_table_names_every_variable(self) -> None:
        readme = (ROOT / "README.md").read_text()
        table = readme[readme.index("## Configuration") : readme.index("## How it works")]
        named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
        assert named >= VARIABLES

    def test_readme_quickstart_has_exactly_two_commands(self) -> None:
        readme = (ROOT / "README.md").read_text()
        quickstart = readme[readme.index("## Quickstart") :]
        block = quickstart[
            quickstart.index("```sh") + 5 : quickstart.index("```", quickstart.index("```sh") + 5)
        ]
        commands = [line for line in block.strip().splitlines() if line.strip()]
        assert [c.split("#")[0].strip() for c in commands] == [
            "python3 scripts/dev.py serve",
            "python3 scripts/dev.py test",
        ]

    def test_ci_runs_the_readme_test_command(self) -> None:
        assert "python3 scripts/dev.py test" in (ROOT / ".ci" / "run").read_text()


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    files = [ROOT / name for name in listed.stdout.splitlines()]
    return [path for path in files if path.is_file() and b"\0" not in path.read_bytes()[:4096]]


def markdown_links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", path.read_text())


class TestSelfContained:
    """A clone has nothing beside it: the repository never points outside itself."""

    OUTSIDE = ("../" + "shared", "/work" + "/")  # spelled apart, so this file does not match itself

    def test_no_file_points_outside_the_repository(self) -> None:
        offending = [
            f"{path.relative_to(ROOT)}: {marker}"
            for path in tracked_text_files()
            for marker in self.OUTSIDE
            if marker in path.read_text(errors="replace")
        ]
        assert offending == []

    def test_every_relative_markdown_link_resolves_inside_the_repository(self) -> None:
        pages = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for page in pages:
            for link in markdown_links(page):
                if link.startswith(("http://", "https://", "#", "mailto:")):
                    continue
                target = (page.parent / link.split("#")[0]).resolve()
                assert target.is_relative_to(ROOT), (page.name, link)
                assert target.exists(), (page.name, link)

    def test_readme_links_the_api_reference_and_shows_the_screenshot(self) -> None:
        links = markdown_links(ROOT / "README.md")
        assert {"docs/README.md", "docs/api.md", "docs/configuration.md", "docs/decisions.md"} <= set(links)
        assert "docs/images/swagger-ui.png" in links
        assert (ROOT / "docs" / "images" / "swagger-ui.png").read_bytes().startswith(b"\x89PNG")


class TestApiReference:
    def test_documents_every_endpoint_of_the_openapi_description(self) -> None:
        from partner_gateway.app import create_app
        from tests.conftest import make_settings

        spec = create_app(make_settings("postgresql+asyncpg://unused@/unused")).openapi()
        reference = (ROOT / "docs" / "api.md").read_text()
        for path, operations in spec["paths"].items():
            for method in operations:
                assert re.search(rf"{method.upper()}\b[^\n]*{re.escape(path)}", reference), (method, path)

    def test_documents_every_betlink_error_code_and_message(self) -> None:
        from partner_gateway.errors import BetLinkError
        from partner_gateway.openapi import _BETLINK_FAILURES

        reference = (ROOT / "docs" / "api.md").read_text()
        for code in BetLinkError.STATUS_BY_CODE:
            assert f"`{code}`" in reference, code
        for failures in _BETLINK_FAILURES.values():
            for _, message in failures:
                assert f"`{message}`" in reference, message

    def test_configuration_page_names_every_variable(self) -> None:
        named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text()))
        assert named >= VARIABLES


class TestStartUpLines:
    def test_readme_shows_local_modes_warning_and_banner_as_the_cli_prints_them(self) -> None:
        cli = (ROOT / "src" / "partner_gateway" / "cli.py").read_text()
        readme = (ROOT / "README.md").read_text()
        for text in (
            "local mode is on: an embedded PostgreSQL for development only",
            "generated keys (kept in ",
        ):
            assert text in cli
            assert text in readme


class TestBench:
    def test_durations_agree_between_the_readmes(self) -> None:
        def durations(path: Path) -> dict[str, str]:
            found = re.findall(
                r"python3 scripts/dev\.py (bench(?: --\w+)?)\s+# (about [^:,\n]+)", path.read_text()
            )
            return dict(found)

        readme, bench = durations(ROOT / "README.md"), durations(ROOT / "bench" / "README.md")
        assert set(readme) >= {"bench", "bench --quick"}
        assert {k: readme[k] for k in ("bench", "bench --quick")} == {
            k: bench[k] for k in ("bench", "bench --quick")
        }

    def test_suggested_tools_install_with_what_the_quickstart_left(self) -> None:
        # The quickstart leaves uv in .tools/bin (or on PATH) and no pipx: suggest nothing else.
        for path in (ROOT / "README.md", ROOT / "bench" / "README.md"):
            text = path.read_text()
            assert "pipx" not in text, path
            for command in re.findall(r"`((?:\S*/)?uv tool install [^`]+)`", text):
                assert command.startswith((".tools/bin/uv ", "uv ")), command
            assert ".tools/bin/uv tool install py-spy" in text, path
