"""The grader's feedback points at the mistake: the first differing position (equal infinities
and equal NaNs count as equal) with both values, the case's number among all the cases and its
name, no echoed bool in a check cell, code cells numbered as a student counts them; a student's
copy graded from a work/ folder; and work/ stays out of `make test`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from minidecode.course.grading import (
    Case,
    _difference,
    check,
    get_exercise,
    grade_notebook,
    run_check,
)

REPO = Path(__file__).resolve().parent.parent
INF = float("inf")
POINTER = re.compile(r"first difference at index \(([\d, ]*)\): "
                     r"yours (\S+), expected (\S+?)(?:[;\s]|$)")


# --------------------------------------------------------------------------- the pointer


def test_equal_infinities_and_nans_count_as_equal() -> None:
    yours = torch.tensor([[-INF, -INF, 0.5, float("nan")], [INF, 1.0, -INF, 2.0]])
    expected = torch.tensor([[-INF, 0.25, 0.5, float("nan")], [INF, 1.0, 3.0, 2.0]])
    assert _difference(yours, expected, 1e-5, 1e-4) == (
        "first difference at index (0, 1): yours -inf, expected 0.25; 1 more position differs"
    )
    assert _difference(yours.clone(), yours, 0.0, 0.0) == ""
    assert _difference(torch.tensor([1, 2, 3]), torch.tensor([1, 5, 3]), 0, 0) == (
        "first difference at index (1,): yours 2, expected 5"
    )


def _min_p_batch_wide_max(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError("min_p")
    probs = torch.softmax(logits, -1)
    return logits.masked_fill(probs < min_p * probs.max(), -INF)


def _min_p_at_most(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError("min_p")
    probs = torch.softmax(logits, -1)
    return logits.masked_fill(probs <= min_p * probs.amax(-1, keepdim=True), -INF)


def _top_p_inclusive(logits, top_p):
    if not 0 < top_p <= 1:
        raise ValueError("top_p")
    ordered, _ = torch.sort(logits, -1, descending=True)
    kept = (torch.softmax(ordered, -1).cumsum(-1) < top_p).sum(-1, keepdim=True).clamp(min=1)
    return logits.masked_fill(logits < ordered.gather(-1, kept - 1), -INF)


@pytest.mark.parametrize(("exercise_id", "wrong"), [
    ("01.1", _min_p_batch_wide_max), ("01.1", _min_p_at_most), ("01.2", _top_p_inclusive),
])
def test_the_pointer_names_a_position_where_the_values_really_differ(exercise_id, wrong) -> None:
    """-inf mistakes: the old "largest difference inf" named a position where both held -inf."""
    exercise = get_exercise(exercise_id)
    result = run_check(exercise, wrong)
    assert result.status == "failed" and result.failed_case >= 1
    match = POINTER.search(result.detail)
    assert match, result.detail
    case = list(exercise.seeded_cases())[result.failed_case - 1]
    yours, expected = wrong(*case.args), exercise.reference(*case.args)
    index = tuple(int(i) for i in match[1].split(",") if i.strip())
    assert float(yours[index]) != float(expected[index])      # printed to 6 significant digits
    assert float(match[2]) == pytest.approx(float(yours[index]), rel=1e-5)
    assert float(match[3]) == pytest.approx(float(expected[index]), rel=1e-5)
    earlier = torch.isclose(yours, expected).flatten()[: torch.tensor(index).dot(
        torch.tensor(yours.stride())).item()]
    assert bool(earlier.all()), "an earlier position differs: not the first difference"


def test_the_header_numbers_the_case_among_all_and_names_it(capsys) -> None:
    def resample_from_p(p, q, draft_token, uniform):
        if uniform < min(1.0, float(p[draft_token] / q[draft_token])):
            return torch.nn.functional.one_hot(torch.tensor(draft_token), p.shape[-1]).to(p.dtype)
        return p

    exercise = get_exercise("07.1")
    total = len(list(exercise.seeded_cases())) + exercise.max_examples
    assert check("07.1", resample_from_p) is False
    header = capsys.readouterr().out.splitlines()[0]
    assert header == (f"✗ 07.1 verify_position: failed case 3 of {total} "
                      "(reject branch: the residual norm(max(0, p - q)))")


def test_a_passing_check_prints_one_line(capsys) -> None:
    assert check("07.3", get_exercise("07.3").reference) is True
    assert capsys.readouterr().out.count("\n") == 1


def test_changing_an_input_in_place_fails_and_says_which(capsys) -> None:
    def min_p_in_place(logits, min_p):
        probs = torch.softmax(logits, -1)
        return logits.masked_fill_(probs < min_p * probs.amax(-1, keepdim=True), -INF)

    assert check("01.1", min_p_in_place) is False
    out = capsys.readouterr().out
    assert "failed case 1 of" in out and "changed its argument logits in place" in out


def test_case_names_are_optional_and_keyword_only() -> None:
    assert Case(1, 2).name == "" and Case(1, name="x").args == (1,)


# --------------------------------------------------------------------------- a student's copy


def _fill(notebook: dict, name: str, body: str) -> None:
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and source.startswith(f"def {name}("):
            cell["source"] = source.replace("    # YOUR CODE HERE\n    raise NotImplementedError()",
                                            body)
            return
    raise AssertionError(f"no stub for {name}")


@pytest.mark.slow
def test_a_copied_exercise_notebook_graded_from_a_work_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    notebook = json.loads((REPO / "exercises" / "01_decode_loop.ipynb").read_text("utf-8"))
    _fill(notebook, "min_p_filter",
          "    if not 0 <= min_p <= 1:\n        raise ValueError(min_p)\n"
          "    probs = torch.softmax(logits, dim=-1)\n"
          "    return logits.masked_fill(probs <= min_p * probs.amax(-1, keepdim=True), "
          "float('-inf'))")
    copy = work / "01_decode_loop.ipynb"
    copy.write_text(json.dumps(notebook), encoding="utf-8")

    report = grade_notebook(copy)
    by_id = {result.exercise_id: result for result in report.results}
    assert by_id["01.1"].status == "failed" and by_id["01.2"].status == "not implemented"
    assert "first difference at index (0,): yours -inf, expected 0.5" in by_id["01.1"].detail
    assert re.search(r"failed \(case \d+ of \d+\)", report.table())
    assert report.cell_errors == []

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = subprocess.run([sys.executable, "-m", "minidecode", "grade", "work/01_decode_loop.ipynb",
                          "-v"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)
    assert cli.returncode == 0, cli.stderr
    assert "01.1 min_p_filter: failed case" in cli.stdout and "yours:" in cli.stdout


@pytest.mark.slow
def test_check_cells_print_one_verdict_and_no_bool(tmp_path: Path) -> None:
    """An exercise notebook as a student runs it: each check cell prints its verdict, never the
    returned True/False, and no nbval marker is in sight."""
    import nbformat
    from nbclient import NotebookClient

    source = REPO / "exercises" / "00_tour.ipynb"
    assert "NBVAL" not in source.read_text("utf-8")
    notebook = nbformat.read(source, as_version=4)
    NotebookClient(notebook, timeout=300, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    check_cells = [cell for cell in notebook.cells
                   if cell.cell_type == "code" and "check(" in cell.source]
    assert check_cells
    for cell in check_cells:
        assert [out.output_type for out in cell.outputs] == ["stream"], cell.outputs
        assert cell.outputs[0].text.strip().startswith("✗ 00.1 softmax_with_temperature: not")


@pytest.mark.slow
def test_a_cell_error_names_the_code_cell_as_counted_from_the_top(tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    path = tmp_path / "00_errors.ipynb"
    nbformat.write(new_notebook(cells=[
        new_markdown_cell("# title"), new_code_cell("import torch"), new_markdown_cell("text"),
        new_code_cell("x = 1\n1 / 0"),
    ]), path)
    report = grade_notebook(path)
    assert report.cell_errors == [
        'code cell 2 raised ZeroDivisionError: division by zero (code cells counted from the '
        'top, markdown not counted; it starts "x = 1")'
    ]


# --------------------------------------------------------------------------- work/ is the student's


def test_ruff_and_pytest_leave_work_out() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    assert "work" in config["tool"]["ruff"]["extend-exclude"]
    assert config["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    makefile = (REPO / "Makefile").read_text("utf-8")
    dirs = re.search(r"^NOTEBOOK_DIRS := (.*)$", makefile, re.M)[1].split()
    recipe = re.search(r"^test: .*\n((?:\t.*\n)+)", makefile, re.M)[1]
    assert "pytest" in recipe and "tests $(NOTEBOOK_DIRS)" in recipe
    assert "work" not in dirs and "work" not in recipe
    assert "/work/" in (REPO / ".gitignore").read_text("utf-8").splitlines()


def test_a_broken_file_in_work_does_not_fail_ruff_or_pytest(tmp_path: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "test_student.py").write_text("import os, sys\ndef test_x():\n"
                                                        "    assert False\n")
    ruff = Path(sys.executable).with_name("ruff")
    lint = subprocess.run([str(ruff), "check", "."], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    unused = subprocess.run([str(ruff), "check", "--no-force-exclude", "work/test_student.py",
                             "--isolated"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert unused.returncode != 0  # the file is really broken: the exclusion is what saves it
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "test_ok" in collected.stdout and "work" not in collected.stdout
