"""The README and .env.example stay true to the settings the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from partner_gateway.config import Settings

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {name.upper() for name in Settings.model_fields}


class TestDocumentedSettings:
    def test_env_example_lists_every_variable(self) -> None:
        listed = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
        assert listed == VARIABLES

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
