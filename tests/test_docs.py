"""The documentation agrees with the code: every setting and environment variable
in docs/configuration.md, links that resolve, commands that exist."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

from omero_adi.cli import build_parser
from omero_adi.settings import ENVIRONMENT, setting_docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_configuration_reference_is_generated_from_the_settings() -> None:
    render = runpy.run_path(str(ROOT / "scripts" / "gen-config-docs.py"))["render"]
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text == render(), "docs/configuration.md is stale: run scripts/gen-config-docs.py"


def test_every_key_and_variable_is_listed_with_its_default() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    defaults = {key: default for key, _kind, default, _doc in setting_docs()}
    for key, default in defaults.items():
        assert re.search(rf"^\| `{key}` \| [^|]+ \| `{re.escape(json.dumps(default))}` \|",
                         text, re.M), key
    for variable, key in ENVIRONMENT.items():
        assert f"| `{variable}` | `{key}` | `{json.dumps(defaults[key])}` |" in text


def test_links_between_documents_resolve() -> None:
    readme_links = LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert {f"docs/{name}.md" for name in
            ("architecture", "configuration", "operations", "upgrading")} <= set(readme_links)
    for document in DOCS:
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (document.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{document.name}: link {target} does not resolve"


def test_documented_commands_exist() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for document in DOCS:
        text = document.read_text(encoding="utf-8")
        blocks = "\n".join(re.findall(r"```.*?```", text, re.S))
        named = re.findall(r"^\s*omero-adi ([a-z]+)", blocks, re.M) + re.findall(
            r"`omero-adi ([a-z]+)", text)
        for command in named:
            assert command in commands, f"{document.name}: no command `omero-adi {command}`"
