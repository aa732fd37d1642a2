"""The course as an nbgrader course directory, built from ``solutions/`` by one command.

::

    python -m minidecode.course nbgrader COURSE_DIR [--exchange DIR] [--timeout S]
    python -m minidecode.course report COURSE_DIR ASSIGNMENT     # scores, with the reasons

``nbgrader`` writes ``COURSE_DIR/nbgrader_config.py`` and ``COURSE_DIR/source/chNN/`` for each
chapter with graded exercises. Each solution notebook keeps its ``### BEGIN SOLUTION`` regions,
whose cells become nbgrader solution cells; each ``check("NN.k", fn)`` cell becomes an autograder
test cell worth the exercise's points (:mod:`minidecode.course.checks`), whose code asks
:func:`exercise_passes` for the verdict that ``python -m minidecode grade`` would give: the same
cases, and the same rule that only a function written in the notebook earns points. So for the
same notebook, nbgrader's score equals ``grade``'s total. (The cells' ``### BEGIN HIDDEN TESTS``
regions are left out: ``grade`` does not run them, and the scores must agree.)

``report`` reads the gradebook of an autograded assignment and prints each student's score, and,
for every exercise without its points, why: the check's verdict, a cell that ran past the time
limit, a submitted file that is not a notebook, or a notebook that does not belong to the
assignment.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["build_course", "exercise_passes", "gradebook_report", "main"]

REPO = Path(__file__).resolve().parents[2]
CHECK_CALL = re.compile(r'^check\("(?P<id>\d{2}\.\d+)",\s*(?P<name>\w+)\);?\s*$', re.MULTILINE)
SOLUTION_NOTEBOOK = re.compile(r"^(?P<chapter>\d{2})_[\w.-]*\.ipynb$")
DEFAULT_EXCHANGE = "/srv/nbgrader/exchange"
DEFAULT_COURSE_ID = "minidecode"


def assignment_name(chapter: str) -> str:
    """``"ch01"`` for chapter ``"01"``."""
    return f"ch{chapter}"


# --------------------------------------------------------------------------------------------
# inside the student's kernel


def exercise_passes(exercise_id: str, namespace: dict[str, Any]) -> bool:
    """Print ``grade``'s verdict on exercise ``exercise_id`` for the function of its name in
    ``namespace`` (the notebook's ``globals()``); return whether it earns its points.

    The function must be written in one of the notebook's cells that ran before this one, as
    ``python -m minidecode grade`` requires.
    """
    import inspect

    from minidecode.course.grading import (
        CheckResult,
        _grade_one,
        _kernel_cell_files,
        get_exercise,
    )

    ex = get_exercise(exercise_id)
    fn = namespace.get(ex.name)
    if fn is None:
        result = CheckResult(ex.exercise_id, ex.name, "missing",
                             detail=f"the notebook defines no {ex.name}", points=ex.points)
    else:
        caller = inspect.currentframe().f_back  # this test cell: not a cell with the answer
        cell_files = _kernel_cell_files() - {caller.f_code.co_filename}
        result = _grade_one(ex, fn, cell_files)
    print(result.report())
    return result.passed


# --------------------------------------------------------------------------------------------
# building the course directory


def _nbgrader_metadata(grade_id: str, *, solution: bool, points: int | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "grade": points is not None,
        "grade_id": grade_id,
        "locked": points is not None,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        metadata["points"] = points
    return metadata


def _test_cell_source(exercise_id: str, name: str, points: int) -> str:
    plural = "s" * (points != 1)
    return (
        f"# Autograded, {points} point{plural}: the cases of check({exercise_id!r}, {name}), "
        "and the function must be\n"
        "# written in this notebook (as `python -m minidecode grade` requires).\n"
        "from minidecode.course.nbgrader import exercise_passes\n"
        "\n"
        f"assert exercise_passes({exercise_id!r}, globals()), "
        f"\"{exercise_id} {name}: no points yet; the line above says why\"\n"
    )


def nbgrader_notebook(
    solution: dict[str, Any], chapter: str, filename: str | None = None
) -> dict[str, Any]:
    """A copy of a solution notebook (JSON) with nbgrader's cell metadata, outputs cleared.

    With ``filename``, markdown that tells the student to grade ``exercises/<filename>`` or
    ``work/<filename>`` names ``chNN/<filename>`` instead, where nbgrader puts the notebook."""
    from minidecode.course.grading import exercises_for_chapter

    exercises = exercises_for_chapter(chapter)
    nb = json.loads(json.dumps(solution))
    nb["metadata"].pop("widgets", None)
    found: set[str] = set()
    for index, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        meta = cell.setdefault("metadata", {})
        for key in ("execution", "collapsed", "scrolled", "nbgrader"):
            meta.pop(key, None)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        elif filename:
            for folder in ("exercises", "work"):
                source = source.replace(f"{folder}/{filename}",
                                        f"{assignment_name(chapter)}/{filename}")
            cell["source"] = source
        match = CHECK_CALL.search(source) if cell["cell_type"] == "code" else None
        if match:
            exercise_id = match["id"]
            if exercise_id not in exercises:
                raise ValueError(f"chapter {chapter}: cell {index} checks unknown {exercise_id}")
            ex = exercises[exercise_id]
            found.add(exercise_id)
            cell["source"] = _test_cell_source(exercise_id, ex.name, ex.points)
            meta["nbgrader"] = _nbgrader_metadata(
                f"test_{exercise_id.replace('.', '_')}", solution=False, points=ex.points
            )
        elif "### BEGIN SOLUTION" in source:
            if cell["cell_type"] != "code":
                raise ValueError(f"chapter {chapter}: markdown answers (cell {index}) carry no "
                                 "points in `grade`; make them code or drop the markers")
            cell["source"] = given_before_solution(source)
            meta["nbgrader"] = _nbgrader_metadata(
                f"answer_{chapter}_{index}", solution=True, points=None
            )
    missing = sorted(set(exercises) - found)
    if missing:
        raise ValueError(f"chapter {chapter}: no check(...) cell for {', '.join(missing)}")
    return nb


def given_before_solution(source: str) -> str:
    """A find-the-bug cell for nbgrader, whose release replaces a whole solution region by its
    stub: the ``### BEGIN GIVEN`` region (the buggy first attempt, commented out) moves to just
    before its ``### BEGIN SOLUTION`` line, under a line telling the student to uncomment it, so
    the released notebook still holds the given code. A cell without one is returned as it is."""
    from minidecode.course.exercises import BEGIN_GIVEN, BEGIN_SOLUTION, END_GIVEN

    lines = source.splitlines(keepends=True)
    out: list[str] = []
    solution_at = 0
    given: list[str] | None = None
    for line in lines:
        marker = line.strip()
        if marker == BEGIN_SOLUTION:
            solution_at = len(out)
        elif marker == BEGIN_GIVEN:
            indent = line[: len(line) - len(line.lstrip())]
            given = [f"{indent}# The given first attempt: uncomment it, delete the stub under it "
                     "and fix the bug.\n"]
            continue
        elif marker == END_GIVEN and given is not None:
            out[solution_at:solution_at] = given
            given = None
            continue
        if given is not None:
            given.append(line)
            continue
        out.append(line)
    return "".join(out)


def _config_text(course_id: str, exchange: str, timeout: int) -> str:
    return textwrap.dedent(f'''\
        # nbgrader configuration of the minidecode course (written by
        # `python -m minidecode.course nbgrader`; rebuild rather than edit).
        import os

        c = get_config()  # noqa: F821  (nbgrader defines it)

        c.CourseDirectory.course_id = {course_id!r}
        c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
        # The exchange every student's server and the instructor's share (a shared volume on a
        # hub); override on the command line with --Exchange.root=DIR.
        c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", {exchange!r})
        # A submission must hold every notebook of the assignment, under its released name.
        c.ExchangeSubmit.strict = True
        # Seconds each cell of a submission may run during autograding; past it the cell is
        # interrupted, and the exercises it should have defined score 0.
        c.Execute.timeout = {timeout}
        # The course's notebooks read nothing outside themselves; the models ship in the package.
        c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
        ''')


def build_course(
    course_dir: Path | str,
    *,
    solutions: Path | str | None = None,
    chapters: list[str] | None = None,
    course_id: str = DEFAULT_COURSE_ID,
    exchange: str = DEFAULT_EXCHANGE,
    timeout: int = 300,
) -> dict[str, Path]:
    """Write ``nbgrader_config.py`` and ``source/chNN/`` into ``course_dir``; return the source
    notebooks by assignment name. Existing ``source/chNN`` folders are replaced; the gradebook,
    ``release/``, ``submitted/`` and the rest are left alone."""
    import shutil

    from minidecode.course.grading import exercises_for_chapter

    course = Path(course_dir).resolve()
    solutions_dir = Path(solutions) if solutions else REPO / "solutions"
    notebooks = sorted(solutions_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no solution notebooks in {solutions_dir}")
    built: dict[str, Path] = {}
    course.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        match = SOLUTION_NOTEBOOK.match(path.name)
        if not match or (chapters and match["chapter"] not in chapters):
            continue
        chapter = match["chapter"]
        try:
            exercises_for_chapter(chapter)
        except ValueError:
            continue  # a chapter without graded exercises is no assignment
        solution = json.loads(path.read_text(encoding="utf-8"))
        nb = nbgrader_notebook(solution, chapter, path.name)
        folder = course / "source" / assignment_name(chapter)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        target = folder / path.name
        target.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                          encoding="utf-8")
        built[assignment_name(chapter)] = target
    if chapters and set(map(assignment_name, chapters)) - set(built):
        unknown = sorted(set(map(assignment_name, chapters)) - set(built))
        raise ValueError(f"no solution notebook with graded exercises for {', '.join(unknown)}")
    (course / "nbgrader_config.py").write_text(_config_text(course_id, exchange, timeout),
                                               encoding="utf-8")
    return built


# --------------------------------------------------------------------------------------------
# reading the gradebook


def _submission_problems(course: Path, assignment: str, student: str,
                         released: set[str]) -> list[str]:
    from minidecode.course.grading import GradeError, load_notebook

    problems = []
    folder = course / "submitted" / student / assignment
    for path in sorted(folder.glob("*.ipynb")):
        if path.name not in released:
            problems.append(f"{path.name} is not a notebook of {assignment} (expected "
                            f"{', '.join(sorted(released))}); it was not graded")
            continue
        try:
            load_notebook(path)
        except GradeError as err:
            problems.append(str(err).replace(str(path), path.name))
    for name in sorted(released):
        if not (folder / name).exists():
            problems.append(f"{name} was not submitted")
    return problems


def _autograded_reasons(path: Path) -> tuple[list[str], dict[str, str]]:
    """Cells of an autograded notebook that ran past the time limit (one line each), and why
    each failing test cell failed, by grade_id."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    timeouts: list[str] = []
    reasons: dict[str, str] = {}
    for number, cell in enumerate(nb["cells"], start=1):
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        if any(err.get("ename") in ("KeyboardInterrupt", "CellTimeoutError") for err in errors):
            timeouts.append(f"cell {number} ran past the time limit and was interrupted")
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not (meta.get("grade") and errors):
            continue
        printed = "".join(
            "".join(out.get("text", "")) for out in cell.get("outputs", [])
            if out.get("output_type") == "stream"
        ).strip()
        first = errors[0]
        reasons[meta["grade_id"]] = (printed.splitlines()[0] if printed
                                     else f"{first['ename']}: {first.get('evalue', '')}")
    return timeouts, reasons


def gradebook_report(course_dir: Path | str, assignment: str) -> list[dict[str, Any]]:
    """One row per submitted student: score, max_score, and reasons (a list of lines)."""
    from nbgrader.api import Gradebook, MissingEntry

    course = Path(course_dir).resolve()
    released = {path.name for path in (course / "source" / assignment).glob("*.ipynb")}
    submitted = sorted(path.parent.name for path in (course / "submitted").glob(f"*/{assignment}"))
    rows = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        max_score = gb.find_assignment(assignment).max_score
        for student in submitted:
            reasons = _submission_problems(course, assignment, student, released)
            try:
                submission = gb.find_submission(assignment, student)
                score = submission.score
            except MissingEntry:
                submission, score = None, 0.0
                reasons.append("not autograded")
            if submission is not None:
                for notebook in submission.notebooks:
                    graded = course / "autograded" / student / assignment / f"{notebook.name}.ipynb"
                    timeouts, found = (_autograded_reasons(graded) if graded.is_file()
                                       else ([], {}))
                    reasons += timeouts
                    for grade in notebook.grades:
                        if grade.score < grade.max_score and grade.name in found:
                            reasons.append(found[grade.name])
            rows.append({"student": student, "score": score, "max_score": max_score,
                         "reasons": reasons})
    return rows


# --------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidecode.course",
                                     description="The course on nbgrader.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("nbgrader", help="write an nbgrader course directory")
    build.add_argument("course_dir", type=Path)
    build.add_argument("--exchange", default=DEFAULT_EXCHANGE,
                       help=f"the shared exchange folder (default {DEFAULT_EXCHANGE})")
    build.add_argument("--course-id", default=DEFAULT_COURSE_ID)
    build.add_argument("--timeout", type=int, default=300,
                       help="seconds each cell may run when autograding (default 300)")
    build.add_argument("--chapter", action="append", dest="chapters",
                       help="only chapter NN (repeatable); default every graded chapter")
    report = commands.add_parser("report", help="scores of an autograded assignment, and why")
    report.add_argument("course_dir", type=Path)
    report.add_argument("assignment", help="e.g. ch01")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    if args.command == "nbgrader":
        if args.timeout <= 0:
            parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
        try:
            built = build_course(args.course_dir, course_id=args.course_id,
                                 exchange=args.exchange, timeout=args.timeout,
                                 chapters=args.chapters)
        except (ValueError, FileNotFoundError) as err:
            print(f"nbgrader: {err}", file=sys.stderr)
            return 2
        for name, path in built.items():
            print(f"{name}: {path}")
        print(f"next: cd {args.course_dir} && nbgrader generate_assignment ch01")
        return 0

    if not (args.course_dir / "gradebook.db").is_file():
        print(f"report: no gradebook in {args.course_dir} (autograde first)", file=sys.stderr)
        return 2
    try:
        rows = gradebook_report(args.course_dir, args.assignment)
    except Exception as err:  # e.g. an assignment the gradebook does not know
        print(f"report: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        print(f"{row['student']}: {row['score']:g}/{row['max_score']:g}")
        for reason in row["reasons"]:
            print(f"    {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
