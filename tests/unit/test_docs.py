"""The docs an integrator works from stay true to the code.

Every field of the settings object has a row in docs/settings.md naming its variable and its
default, so a setting added without documentation fails here; every FORESIGHT_* variable that
page names still exists; every relative link in README.md and docs/*.md leads to a file (and
to a heading of it, when it names one); and docs/README.md lists every page of docs/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from foresight.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SETTINGS_PAGE = DOCS / "settings.md"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
#: Variables read outside the settings object, which docs/settings.md documents beside it.
OTHER_VARIABLES = frozenset({"FORESIGHT_AGENT_TOKEN", "FORESIGHT_TEST_BACKEND"})

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_VARIABLE = re.compile(r"\bFORESIGHT_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def variable(field: str) -> str:
    return f"FORESIGHT_{field.upper()}"


def default_text(value: object) -> str:
    """A default as an operator writes the variable: JSON for lists and objects, ``unset`` for
    none, whole numbers without a decimal point, the home folder as ``~``."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, Path):
        home, text = str(Path.home()), str(value)
        return "~" + text[len(home) :] if text.startswith(home + "/") else text
    return str(value)


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, with escaped pipes (``\\|``) read as pipes."""
    inner = row.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def rows_of(page: Path, name: str) -> list[list[str]]:
    """The table rows of ``page`` whose first cell is `` `name` ``."""
    rows = [cells(line) for line in page.read_text().splitlines() if line.startswith("|")]
    return [row for row in rows if row and row[0] == f"`{name}`"]


def prose(page: Path) -> str:
    """A page without its code blocks and code spans, where links are only examples."""
    return _CODE_SPAN.sub("", _FENCE.sub("", page.read_text()))


def anchors(page: Path) -> set[str]:
    """The fragments GitHub gives the page's headings: lower case, punctuation dropped, spaces
    as hyphens (``## The HTTP collector`` is ``#the-http-collector``)."""
    slugs = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        slugs.add(text.replace(" ", "-"))
    return slugs


def relative_links(page: Path) -> list[str]:
    text = prose(page)
    targets = _LINK.findall(text) + _REFERENCE.findall(text)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def linked_files(page: Path) -> set[Path]:
    """The files ``page`` links to (links within the page left out)."""
    paths = (t.partition("#")[0] for t in relative_links(page))
    return {(page.parent / path).resolve() for path in paths if path}


def test_defaults_are_written_as_an_operator_sets_them() -> None:
    assert default_text(600.0) == "600"
    assert default_text(0.5) == "0.5"
    assert default_text(["127.0.0.1", "localhost"]) == '["127.0.0.1", "localhost"]'
    assert default_text({"datacenter1": 3}) == '{"datacenter1": 3}'
    assert default_text(None) == "unset"
    assert default_text(False) == "false"
    assert default_text(Path.home() / ".cache" / "foresight") == "~/.cache/foresight"
    assert cells("| `a` | `(^\\|/)x` |") == ["`a`", "`(^|/)x`"]


def test_anchors_are_the_ones_github_makes(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n## The HTTP collector\n### Local services (`foresight services`)\n"
        "```\n# not a heading\n```\n## Dead-letter topics\n"
    )
    assert anchors(page) == {
        "title",
        "the-http-collector",
        "local-services-foresight-services",
        "dead-letter-topics",
    }


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(field: str) -> None:
    name = variable(field)
    rows = rows_of(SETTINGS_PAGE, name)
    assert len(rows) == 1, f"{name}: {len(rows)} rows in docs/settings.md, expected one"
    info = Settings.model_fields[field]
    default = default_text(info.get_default(call_default_factory=True))
    # | variable | type | default | meaning |
    assert len(rows[0]) == 4, f"{name}: the row has {len(rows[0])} cells, expected 4"
    assert f"`{default}`" in rows[0][2], f"{name}: default `{default}` not in {rows[0][2]!r}"


def test_every_variable_the_settings_page_names_exists() -> None:
    known = {variable(f) for f in Settings.model_fields} | OTHER_VARIABLES
    named = set(_VARIABLE.findall(SETTINGS_PAGE.read_text()))
    assert named - known == set(), "docs/settings.md names variables no process reads"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files(page: Path) -> None:
    def leads_somewhere(target: str) -> bool:
        path, _, fragment = target.partition("#")
        linked = page.parent / path if path else page
        if not linked.exists():
            return False
        return not fragment or linked.suffix != ".md" or fragment in anchors(linked)

    broken = [target for target in relative_links(page) if not leads_somewhere(target)]
    assert broken == [], f"{page.relative_to(REPO)} links to missing files or headings"


def test_the_docs_index_lists_every_page() -> None:
    pages = {p.resolve() for p in DOCS.glob("*.md") if p.name != "README.md"}
    assert pages - linked_files(DOCS / "README.md") == set(), "docs/README.md misses these pages"


def test_the_readme_links_every_docs_page() -> None:
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    assert pages - linked_files(REPO / "README.md") == set(), "README.md misses these docs pages"
