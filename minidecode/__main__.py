"""Command line: ``python -m minidecode doctor | grade NOTEBOOK | exercises build [--check]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_CELL_ERRORS, EXIT_CANNOT_GRADE = 0, 1, 2


def _grade(args: argparse.Namespace) -> int:
    from minidecode.course.grading import GradeError, grade_notebook, load_notebook

    if args.timeout <= 0:
        print(f"grade: --timeout must be > 0 seconds, got {args.timeout}", file=sys.stderr)
        return EXIT_CANNOT_GRADE
    try:
        load_notebook(args.notebook, chapter=args.chapter)  # bad input: one line, before any kernel
        print(f"grading {args.notebook} (each cell may take up to {args.timeout} s)", flush=True)
        report = grade_notebook(args.notebook, timeout=args.timeout, chapter=args.chapter)
    except GradeError as err:
        print(f"grade: {err}", file=sys.stderr)
        return EXIT_CANNOT_GRADE
    except KeyboardInterrupt:
        print("grade: interrupted", file=sys.stderr)
        return EXIT_CANNOT_GRADE
    except Exception as err:  # students paste this line into a bug report; no traceback
        print(f"grade: could not grade {args.notebook}: {type(err).__name__}: {err}",
              file=sys.stderr)
        return EXIT_CANNOT_GRADE
    print(report.table())
    for result in report.results:
        if not result.passed and result.detail and args.verbose:
            print(f"\n{result.exercise_id} {result.name}: {result.detail}")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    if report.cell_errors:
        more = len(report.cell_errors) - 1
        suffix = f" (and {more} more cell error{'s' * (more != 1)})" if more else ""
        print(f"grade: {report.cell_errors[0]}{suffix}", file=sys.stderr)
        return EXIT_CELL_ERRORS
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minidecode",
        description="minidecode: a Jupyter-first course on how language models decode.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="print what is installed and usable (for bug reports)")
    grade = commands.add_parser(
        "grade",
        help="execute an exercise notebook and print a score table",
        description=(
            "Execute NOTEBOOK in a fresh kernel, check every exercise of its chapter, print a "
            f"score table. Exit {EXIT_OK}: graded; {EXIT_CELL_ERRORS}: graded, but some cell "
            f"raised an error; {EXIT_CANNOT_GRADE}: could not grade (missing file, not a "
            "notebook, kernel died)."
        ),
    )
    grade.add_argument("notebook", type=Path, help="e.g. exercises/00_tour.ipynb")
    grade.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    grade.add_argument("--chapter", default=None, help="chapter NN, if the file name lacks it")
    grade.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    grade.add_argument("-v", "--verbose", action="store_true", help="show each failing case")
    exercises = commands.add_parser("exercises", help="generate exercises/ from solutions/")
    exercises.add_argument("rest", nargs=argparse.REMAINDER, help="build [--check]")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from minidecode.course.doctor import run_doctor

        return run_doctor()
    if args.command == "grade":
        return _grade(args)
    from minidecode.course.exercises import main as exercises_main

    return exercises_main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
