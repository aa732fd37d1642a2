"""Committed notebooks: valid, run clean, outputs committed where readers need them.

nbval itself (running every notebook in notebooks/ and solutions/) is part of `make test`:
    pytest tests notebooks solutions --nbval-lax --nbval-current-env \
        --sanitize-with tests/nbval_sanitize.cfg
These tests check what nbval does not: the committed files themselves.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
WITH_OUTPUTS = sorted([*REPO.glob("notebooks/*.ipynb"), *REPO.glob("solutions/*.ipynb")])
EXERCISES = sorted(REPO.glob("exercises/*.ipynb"))
CHECK_OUTPUT = "# NBVAL_CHECK_OUTPUT"


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(REPO)) for path in paths]


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    notebook = nbformat.read(path, as_version=4)
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("path", WITH_OUTPUTS + EXERCISES, ids=_ids(WITH_OUTPUTS + EXERCISES))
def test_notebook_is_valid_nbformat_4_with_a_python_kernel(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.get("kernelspec", {}).get("language") == "python"
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), (
        f"{path.name}: the first cell should be a markdown title"
    )


@pytest.mark.parametrize("path", WITH_OUTPUTS, ids=_ids(WITH_OUTPUTS))
def test_committed_notebook_holds_no_error_output(path: Path) -> None:
    for index, cell in enumerate(_code_cells(path)):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", (
                f"{path.name}, code cell {index + 1}: committed with "
                f"{output.get('ename')}: {output.get('evalue')}"
            )
            if output.output_type == "stream":
                assert "Traceback (most recent call last)" not in output.text, (
                    f"{path.name}, code cell {index + 1}: a traceback was printed"
                )


@pytest.mark.parametrize("path", WITH_OUTPUTS, ids=_ids(WITH_OUTPUTS))
def test_committed_notebook_has_its_outputs(path: Path) -> None:
    cells = _code_cells(path)
    assert any(cell.outputs for cell in cells), (
        f"{path.name} was committed without outputs: run `make notebooks`"
    )
    for index, cell in enumerate(cells):
        if cell.source.strip():
            assert cell.execution_count is not None, (
                f"{path.name}, code cell {index + 1} was never run: run `make notebooks`"
            )
        if CHECK_OUTPUT in cell.source:
            assert cell.outputs, f"{path.name}, code cell {index + 1}: checked but has no output"


@pytest.mark.parametrize("path", EXERCISES, ids=_ids(EXERCISES))
def test_exercise_notebook_has_no_outputs(path: Path) -> None:
    for index, cell in enumerate(_code_cells(path)):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{path.name}, code cell {index + 1} has outputs: regenerate with "
            "`python -m minidecode.course.exercises build`"
        )


@pytest.mark.parametrize("path", EXERCISES, ids=_ids(EXERCISES))
def test_exercise_notebook_leaks_no_solution(path: Path) -> None:
    for cell in nbformat.read(path, as_version=4).cells:
        for marker in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
            assert marker not in cell.source, f"{path.name} still holds {marker!r}"


def test_every_figure_notebook_shows_a_figure_on_github() -> None:
    """A lesson notebook that plots commits at least one static image (widgets do not render)."""
    for path in REPO.glob("notebooks/*.ipynb"):
        cells = _code_cells(path)
        plots = any("plt." in cell.source or "matplotlib" in cell.source for cell in cells)
        images = any(
            "image/png" in output.get("data", {}) or "image/svg+xml" in output.get("data", {})
            for cell in cells
            for output in cell.outputs
        )
        assert images or not plots, f"{path.name} plots but commits no image output"
