"""docs/instructor/counts.md agrees with the exercises and solutions, and scripts/course_counts.py
counts, renders, reuses and splits as it says.

The quick comparison (seconds; no check is run): the exercises, points and solution lines of every
chapter and exercise row are recounted from solutions/ and minidecode/course/checks/, so a new
exercise, a changed solution or new points fail `test_counts_md_is_up_to_date` until
`python scripts/course_counts.py` is run again. The verdicts in the file (fails on the stub,
variants rejected) are not compared here: measuring them takes minutes, and that they hold (every
fresh stub scores 0, every wrong variant is rejected) is asserted on every run by
tests/test_grading.py and tests/test_exercise_rules.py; `python scripts/course_counts.py --check`
also compares their fingerprints.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def course_counts():
    spec = importlib.util.spec_from_file_location("course_counts",
                                                  REPO / "scripts" / "course_counts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_solution_notebook_has_a_row(course_counts) -> None:
    text = (REPO / "docs" / "instructor" / "counts.md").read_text(encoding="utf-8")
    for notebook in sorted((REPO / "solutions").glob("[0-9][0-9]_*.ipynb")):
        assert f"| {notebook.stem} |" in text, notebook.name


def test_counts_md_is_up_to_date(course_counts) -> None:
    problems = course_counts.stale_counts()
    assert problems == [], "\n".join(problems) + "\nrun: python scripts/course_counts.py"


def test_a_stale_count_is_named(course_counts, tmp_path: Path) -> None:
    chapters = course_counts.static_counts()
    path = tmp_path / "counts.md"
    path.write_text(course_counts.render(chapters, course_counts.Verdicts()), encoding="utf-8")
    assert course_counts.stale_counts(path) == []
    first = chapters[0].exercises[0]
    row = next(line for line in path.read_text(encoding="utf-8").splitlines()
               if line.startswith(f"| {first.exercise_id} |"))
    wrong = row.replace(f"| {first.points} | {first.solution_lines} |",
                        f"| {first.points + 1} | {first.solution_lines} |")
    extra = "| 99.9 | `gone` | 1 | 3 | not measured | 0 / 0 |"
    path.write_text(path.read_text(encoding="utf-8").replace(row, f"{wrong}\n{extra}"),
                    encoding="utf-8")
    assert course_counts.stale_counts(path) == [
        f"{first.exercise_id}: function / points / solution lines `{first.name}` / "
        f"{first.points + 1} / {first.solution_lines} in the file, `{first.name}` / "
        f"{first.points} / {first.solution_lines} now",
        "99.9: in the file, but no such chapter or exercise now",
    ]


def test_solution_lines_are_credited_to_the_enclosing_function(course_counts,
                                                               tmp_path: Path) -> None:
    cells = [
        {"cell_type": "markdown", "source": ["### BEGIN SOLUTION\n", "prose\n",
                                             "### END SOLUTION\n"]},
        {"cell_type": "code", "source": [
            "def helper(x):\n",
            "    return x\n",
            "\n",
            "def answer(x):\n",
            "    ### BEGIN SOLUTION\n",
            "    y = x + 1\n",
            "\n",
            "    ### BEGIN GIVEN\n",
            "    # return x\n",
            "    ### END GIVEN\n",
            "    return y\n",
            "    ### END SOLUTION\n",
        ]},
        {"cell_type": "code", "source": ["### BEGIN SOLUTION\n", "z = 1\n", "### END SOLUTION\n"]},
    ]
    notebook = tmp_path / "99_x.ipynb"
    notebook.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    # blank lines, markdown regions and the given (buggy) code do not count
    assert course_counts.solution_lines_by_function(notebook) == {"answer": 2, None: 1}


def test_a_variant_the_check_accepts_is_reported(course_counts) -> None:
    chapters = [course_counts.ChapterCount("99", "99_x.ipynb", [
        course_counts.ExerciseCount("99.1", "f", 2, 10),
        course_counts.ExerciseCount("99.2", "g", 1, 4),
    ])]
    verdicts = course_counts.Verdicts(
        stub={"99.1": "not implemented", "99.2": "passed"},
        variants={"99.1": {"wrong_a": "failed", "wrong_b": "passed"}},
    )
    text = course_counts.render(chapters, verdicts)
    row = next(line for line in text.splitlines() if line.startswith("| 99_x |"))
    assert row == "| 99_x | 2 | 3 | 14 | 7 | 1/2 (50%) | 0/2 (0%) | 1/2 (50%) |"
    assert "`99.1 wrong_b`" in text
    fingerprints, recorded = course_counts.recorded(text)
    assert recorded == verdicts and fingerprints == {"99": ""}


def test_an_unchanged_chapter_keeps_its_recorded_verdicts(course_counts) -> None:
    chapter = course_counts.ChapterCount("99", "99_x.ipynb",
                                         [course_counts.ExerciseCount("99.1", "f", 1)],
                                         fingerprint="abc")
    before = course_counts.Verdicts(stub={"99.1": "not implemented"},
                                    variants={"99.1": {"wrong": "failed"}})
    lines: list[str] = []
    after = course_counts.run_checks([chapter], log=lines.append, reuse=({"99": "abc"}, before))
    assert after == before and lines == ["chapter 99: unchanged, verdicts reused"]


def test_a_part_of_the_chapters_is_saved_not_rendered(course_counts) -> None:
    with pytest.raises(SystemExit):
        course_counts.main(["--only", "00"])
