"""The exit-code tables in the README and docs/architecture.md are probmod.errors' own, row for row."""

import inspect
import re

import pytest

from probmod import errors

from .docrun import ROOT

MARKER = "<!-- exit-codes:"
DOCS = [ROOT / "README.md", ROOT / "docs" / "architecture.md"]


def expected_table() -> str:
    rows = "\n".join(f"| {code} | {meaning} |" for code, meaning in errors.EXIT_CODES.items())
    return "| code | meaning |\n| ---: | --- |\n" + rows


def table_after_marker(text: str) -> str:
    after = text.split(MARKER, 1)[1].split("\n", 1)[1]
    return "\n".join(re.match(r"((?:\|.*\n)+)", after + "\n").group(1).strip().splitlines())


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_documented_exit_codes_are_the_table(path):
    text = path.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"{path.name}: expected one {MARKER!r} marker above the table"
    assert table_after_marker(text) == expected_table(), f"paste this under the marker:\n{expected_table()}"


def test_error_classes_table_matches_the_hierarchy():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| `(\w+)` \|$", text, re.M)
    classes = {n: c for n, c in vars(errors).items() if inspect.isclass(c) and issubclass(c, errors.ProbmodError)}
    assert {name for name, _, _ in rows} == set(classes)
    for name, code, base in rows:
        cls = classes[name]
        assert cls.exit_code == int(code) and int(code) in errors.EXIT_CODES
        assert base in [b.__name__ for b in cls.__mro__[1:]], (name, base)
