"""The documentation agrees with the code: every setting and environment variable
in docs/configuration.md, links that resolve, commands and flags that exist,
the metrics the endpoint serves."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

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
        assert re.search(rf"^\| `{re.escape(key)}` \| [^|]+ \| `{re.escape(json.dumps(default))}` \|",
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
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr,arg-type]
    for document in DOCS:
        text = document.read_text(encoding="utf-8")
        blocks = "\n".join(re.findall(r"```.*?```", text, re.S))
        named = re.findall(r"^\s*omero-adi ([a-z]+)", blocks, re.M) + re.findall(
            r"`omero-adi ([a-z]+)", text)
        for command in named:
            assert command in commands, f"{document.name}: no command `omero-adi {command}`"


def _documented_command_lines() -> list[tuple[str, str]]:
    """(document, arguments) of every ``omero-adi …`` line in a code block."""
    found = []
    for document in DOCS:
        for block in re.findall(r"```[a-z]*\n(.*?)```", document.read_text(encoding="utf-8"), re.S):
            for line in block.splitlines():
                for part in line.split("&&"):
                    command = re.match(r"^(?:\S*/)?omero-adi\s+(.*)$", part.split(" #")[0].strip())
                    if command:
                        found.append((document.name, command.group(1)))
    return found


def test_documented_command_lines_parse_with_their_flags() -> None:
    lines = _documented_command_lines()
    assert len(lines) >= 10  # README's "Using it" and operations.md's recipes
    parser = build_parser()
    for document, arguments in lines:
        argv = shlex.split(re.sub(r"<[^>]+>", "placeholder", arguments))
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{document}: `omero-adi {arguments}` is not a valid command line")


def test_the_metrics_table_lists_exactly_the_metrics_served() -> None:
    from omero_adi.metrics import DaemonMetrics  # needs the metrics extra, as test_metrics does

    daemon = SimpleNamespace(running={}, progress={}, running_lock=threading.Lock())
    registry = DaemonMetrics(daemon).registry  # type: ignore[arg-type]
    served = {f"{family.name}_total" if family.type == "counter" else family.name
              for family in registry.collect() if family.name.startswith("omero_adi_")}
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(omero_adi_[a-z_]+)", text, re.M))
    assert documented == served
