"""The user pages say what the code does: each setting and default of docs/deployment.md#all-settings and of
docs/reliability.md#limits is read from ``Settings`` here, each status and error type the server can answer
is in docs/reliability.md#status-codes, and each link between the pages hits a heading that exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from service.errors import ServiceError
from service.http.errors import _ENGINE_STATUS
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = ["README.md", "docs/models.md", "docs/deployment.md", "docs/architecture.md", "docs/reliability.md"]
UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
# A number as the docs write a default: 30, 2.5, 64 MiB (units other than bytes are the setting's own: s, ms, Hz).
NUMBER = re.compile(r"(\d+(?:\.\d+)?)(?: (KiB|MiB|GiB)\b)?")


def section(page: Path, heading: str) -> str:
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    level = heading.split(" ", 1)[0]
    end = re.search(rf"\n#{{1,{len(level)}}} ", text[start + 1 :])
    return text[start : start + 1 + end.start()] if end else text[start:]


def table_rows(text: str) -> list[list[str]]:
    """The cells of each row of the markdown tables in ``text``, header and rule lines left out."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [row for row in rows[1:] if not set("".join(row)) <= set("- :")]


def field(name: str) -> str:
    """The settings field of a name as the docs write it (``MAX_BODY_BYTES``, ``VOCOS_MAX_BODY_BYTES``)."""
    return name.removeprefix("VOCOS_").lower()


def number(text: str) -> float | None:
    match = NUMBER.match(text.strip())
    if match is None:
        return None
    return float(match[1]) * UNITS.get(match[2] or "", 1)


def default(name: str) -> object:
    value = Settings.model_fields[field(name)].default
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def test_the_settings_table_names_every_setting_with_its_default() -> None:
    """Each `NAME (default)` of the table: a setting, whose default is the one written; every setting listed."""
    text = section(DOCS / "deployment.md", "## All settings")
    table = "\n".join(" | ".join(row) for row in table_rows(text))
    names = set(re.findall(r"`(?:VOCOS_)?([A-Z][A-Z0-9_]+)`", table))
    assert names, "no settings found in the table"
    unknown = {name for name in names if field(name) not in Settings.model_fields}
    assert not unknown, f"in docs/deployment.md#all-settings but no setting: {sorted(unknown)}"
    missing = {name.upper() for name in Settings.model_fields} - names
    assert not missing, f"settings missing from docs/deployment.md#all-settings: {sorted(missing)}"
    checked = 0
    for match in re.finditer(r"`([A-Z][A-Z0-9_]+)` \(([^,;)]*)", table):
        name, written = match[1], match[2].strip()
        if written in ("`true`", "`false`"):
            assert default(name) is (written == "`true`"), f"{name}: the table says {written}"
            checked += 1
        elif written.startswith("`") and "/" in written:  # the choices: `text`/`json`
            choices = set(get_args(Settings.model_fields[field(name)].annotation))
            listed = set(re.findall(r"`([^`]+)`", written))
            if choices:
                assert listed <= choices, f"{name}: the table lists {sorted(listed - choices)}, no choice of it"
                assert all(f"`{choice}`" in table for choice in choices), f"{name}: the table leaves out a choice"
                checked += 1
        elif (value := number(written)) is not None:
            assert default(name) == value, f"{name}: the table says {written}, the default is {default(name)!r}"
            checked += 1
    assert checked >= 20, f"only {checked} defaults read from the table: has its form changed?"


def test_the_limits_table_gives_each_limit_its_default() -> None:
    """docs/reliability.md#limits: `| NAME[, NAME] | default[, default] | ... |`."""
    checked = 0
    for row in table_rows(section(DOCS / "reliability.md", "### Limits")):
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0])
        values = [number(part) for part in row[1].split(",")]
        assert names and len(names) == len(values), row[:2]
        for name, value in zip(names, values, strict=True):
            assert field(name) in Settings.model_fields, f"{name} is no setting"
            assert value == default(name), f"{name}: the limits table says {row[1]!r}, the default is {default(name)!r}"
            checked += 1
    assert checked >= 10


def served_errors() -> set[tuple[int, str]]:
    """Every (status, type) of the service's own exceptions and of the engine's."""
    pairs, todo = set(), [ServiceError]
    while todo:
        cls = todo.pop()
        pairs.add((cls.status_code, cls.error_type))
        todo.extend(cls.__subclasses__())
    return pairs | set(_ENGINE_STATUS.values())


def test_every_status_and_error_type_is_in_the_status_table() -> None:
    rows = table_rows(section(DOCS / "reliability.md", "### Status codes"))
    documented = {(int(status), error_type)
                  for row in rows
                  for status in re.findall(r"\d{3}", row[0])
                  for error_type in re.findall(r"`(\w+)`", row[1])}
    missing = served_errors() - documented
    assert not missing, f"answered but not in docs/reliability.md#status-codes: {sorted(missing)}"
    # Starlette's own errors (400 of a malformed request, 404 no such path, 405) are all `http_error`.
    stale = {(status, kind) for status, kind in documented - served_errors() if kind != "http_error"}
    assert not stale, f"in docs/reliability.md#status-codes but never answered: {sorted(stale)}"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES)
def test_links_between_pages_hit_a_heading(page: str) -> None:
    path = REPO / page
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, fragment = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{link}: no such heading")
    assert not broken, f"{page}: {broken}"
