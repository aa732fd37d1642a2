"""What a student reads speaks of the course: nothing outside the repository, no build history."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted([*REPO.glob("notebooks/*.ipynb"), *REPO.glob("exercises/*.ipynb"),
                    *REPO.glob("solutions/*.ipynb")])
TEXTS = sorted([REPO / "README.md", REPO / "benchmarks" / "RESULTS.md",
                *REPO.glob("docs/**/*.md"), *REPO.glob("minidecode/models/*/README.md")])
# Pointers outside the repository, and words that tell how or when the course was made.
FORBIDDEN = re.compile(
    r"\.\./shared|CALIBRATION\.md|calibration run|Korean|the source text|the session|"
    r"work session|goal set for this chapter", re.IGNORECASE)
# Labels that name a first attempt after where it came from instead of what it does: the course
# calls it "a common first attempt" or by what it does ("three-factor scheduler (fixed)").
SOURCE_LABELS = re.compile(
    r"\bsource(?:'s| rule| variant| scheduler| text)\b|\(source\)|SourceScheduler|"
    r"source_selector|source_features", re.IGNORECASE)


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(REPO)) for path in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_cells_speak_of_the_course(path: Path) -> None:
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        found = FORBIDDEN.search(cell.source) or SOURCE_LABELS.search(cell.source)
        assert not found, f"{path.name}, cell {index + 1}: {found.group(0)!r}"


def _output_texts(cell) -> list[str]:
    texts = []
    for output in cell.get("outputs", []):
        texts.append(output.get("text", ""))
        texts += [value for key, value in output.get("data", {}).items()
                  if key.startswith("text/") and isinstance(value, str)]
    return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_outputs_speak_of_the_course(path: Path) -> None:
    """Printed tables and plot labels too: a label that names the source shows in the output."""
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        for text in _output_texts(cell):
            found = FORBIDDEN.search(text) or SOURCE_LABELS.search(text)
            assert not found, f"{path.name}, output of cell {index + 1}: {found.group(0)!r}"


@pytest.mark.parametrize("path", TEXTS, ids=_ids(TEXTS))
def test_documents_speak_of_the_course(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = FORBIDDEN.search(line) or SOURCE_LABELS.search(line)
        assert not found, f"{path.relative_to(REPO)}:{number}: {found.group(0)!r}"
