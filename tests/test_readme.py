"""The README's settings table names every setting: each Settings field and every LECTURE_QA_* variable the code,
the Makefile, the Dockerfile or the compose file reads (a user met `LECTURE_QA_SOFFICE` in an error message and
found it nowhere in the README)."""

from __future__ import annotations

import re

from pydantic import AliasChoices

from app.settings import Settings
from tests.conftest import ROOT

ENV_NAME = re.compile(r"\bLECTURE_QA_[A-Z0-9_]*[A-Z0-9]\b")


def settings_table() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "the README's Configuration section has no settings table"
    return "\n".join(row.split(" | ", 1)[0] for row in rows)  # the first column: the variables


def field_names(name: str, alias: object) -> set[str]:
    if isinstance(alias, AliasChoices):
        return {str(c) for c in alias.choices}
    if isinstance(alias, str):
        return {alias}
    return {f"LECTURE_QA_{name.upper()}"}


def used_in_code() -> dict[str, str]:
    """LECTURE_QA_* names in the code and the files that run it, with the first file naming each."""
    files = [*sorted((ROOT / "app").rglob("*.py")), *sorted((ROOT / "ingest").rglob("*.py")),
             *sorted((ROOT / "scripts").glob("*")), ROOT / "Makefile", ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    found: dict[str, str] = {}
    for f in files:
        if f.is_file():
            for name in ENV_NAME.findall(f.read_text(errors="replace")):
                found.setdefault(name, str(f.relative_to(ROOT)))
    return found


def test_every_settings_field_is_in_the_readme_table():
    table = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", settings_table()))
    missing = {name: sorted(names) for name, field in Settings.model_fields.items()
               if not (names := field_names(name, field.validation_alias)) <= table}
    assert not missing, f"Settings fields whose variables the README's table does not list: {missing}"


def test_every_lecture_qa_variable_in_the_code_is_in_the_readme_table():
    table = set(ENV_NAME.findall(settings_table()))
    used = used_in_code()
    assert "LECTURE_QA_SOFFICE" in used  # the scan sees the variable that started this
    missing = {name: where for name, where in used.items() if name not in table}
    assert not missing, f"variables read in the code but not in the README's table: {missing}"


def test_the_readme_table_lists_no_variable_nothing_reads():
    known = {n for name, f in Settings.model_fields.items() for n in field_names(name, f.validation_alias)}
    stale = set(ENV_NAME.findall(settings_table())) - known - set(used_in_code())
    assert not stale, f"the README's table lists variables nothing reads: {sorted(stale)}"
