"""Write ``exercises/`` from ``solutions/``: the solution notebooks are the source of truth.

Solution notebooks mark what the student writes with nbgrader's markers, so instructors can also
feed them to ``nbgrader generate_assignment``::

    def softmax_with_temperature(logits, temperature):
        ### BEGIN SOLUTION
        scaled = logits / temperature
        ...
        ### END SOLUTION

becomes, in the exercise notebook, the same ``def`` with the region replaced at the marker's
indentation by::

        # YOUR CODE HERE
        raise NotImplementedError()

A find-the-bug exercise hands the student a buggy first attempt instead of the stub: inside the
solution region, a ``### BEGIN GIVEN`` ... ``### END GIVEN`` region holds the given code, each
line commented out with ``# `` (so the solution notebook runs only the fix below it)::

    def pareto_front_first_attempt(scores):
        ### BEGIN SOLUTION
        ### BEGIN GIVEN
        # dominated = (other >= me).all()
        ### END GIVEN
        dominated = (other >= me).all() and (other > me).any()
        ### END SOLUTION

becomes, in the exercise notebook, the given lines uncommented in place of the stub (the first
``#`` after the marker's indentation and one space after it are removed; the rest of the solution
region is dropped)::

    def pareto_front_first_attempt(scores):
        dominated = (other >= me).all()

``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions are dropped (a cell left empty by
that is dropped too), and so are the lines holding only nbval's ``# NBVAL_CHECK_OUTPUT`` marker
(it tells the test suite to compare a solution cell's output; a student has no use for it); in
markdown cells a solution region becomes ``YOUR ANSWER HERE``. Outputs,
execution counts, timing metadata and widget state are stripped; cell ids are kept, and the JSON is
written the way nbformat writes it (sorted keys, one-space indent), so the output is byte-for-byte
reproducible and ``build --check`` can compare it exactly.

Usage::

    python -m minidecode.course.exercises build           # write exercises/*.ipynb
    python -m minidecode.course.exercises build --check   # only compare; exit 1 on any difference
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["MarkerError", "build", "exercise_notebook", "exercise_source", "render_notebook"]

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_GIVEN = "### BEGIN GIVEN"
END_GIVEN = "### END GIVEN"
BEGIN_HIDDEN_TESTS = "### BEGIN HIDDEN TESTS"
END_HIDDEN_TESTS = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)
STRIPPED_CELL_METADATA = ("execution", "collapsed", "scrolled")
STRIPPED_LINES = ("# NBVAL_CHECK_OUTPUT",)
STRIPPED_NOTEBOOK_METADATA = ("widgets",)


class MarkerError(ValueError):
    """A solution notebook's markers do not pair up."""


def exercise_source(source: str, *, cell_type: str = "code") -> str:
    """``source`` with solution regions stubbed out (or replaced by their given code) and
    hidden-test regions removed."""
    stub = CODE_STUB if cell_type == "code" else TEXT_STUB
    kept: list[str] = []
    open_marker: str | None = None
    open_line = 0
    solution_at = 0  # where in ``kept`` the open solution region's stub or given code goes
    solution_indent = ""
    given: list[str] | None = None  # the given lines of the open solution region, uncommented
    given_open = False
    given_indent = ""
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        marker = line.strip()
        if marker in (BEGIN_GIVEN, END_GIVEN):
            if cell_type != "code" or open_marker != BEGIN_SOLUTION:
                raise MarkerError(f"line {number}: {marker!r} outside a code solution region")
            if marker == BEGIN_GIVEN:
                if given is not None:
                    raise MarkerError(f"line {number}: a second {BEGIN_GIVEN!r} in one solution "
                                      f"region (line {open_line})")
                given, given_open = [], True
                given_indent = line[: len(line) - len(line.lstrip())]
            elif not given_open:
                raise MarkerError(f"line {number}: {marker!r} without a matching BEGIN")
            else:
                given_open = False
            continue
        if given_open:
            given.append(_uncommented(line, given_indent, number))
            continue
        if marker in (BEGIN_SOLUTION, BEGIN_HIDDEN_TESTS):
            if open_marker is not None:
                raise MarkerError(
                    f"line {number}: {marker!r} inside {open_marker!r} (line {open_line})"
                )
            open_marker, open_line = marker, number
            if marker == BEGIN_SOLUTION:
                solution_at = len(kept)
                solution_indent = line[: len(line) - len(line.lstrip())]
                given = None
            continue
        if marker in (END_SOLUTION, END_HIDDEN_TESTS):
            expected_end = END_SOLUTION if open_marker == BEGIN_SOLUTION else END_HIDDEN_TESTS
            if open_marker is None or marker != expected_end:
                raise MarkerError(f"line {number}: {marker!r} without a matching BEGIN")
            if open_marker == BEGIN_SOLUTION:
                replacement = given if given is not None else [
                    f"{solution_indent}{stub_line}\n" for stub_line in stub
                ]
                kept[solution_at:solution_at] = replacement
            open_marker = None
            continue
        if open_marker is None and not (cell_type == "code" and marker in STRIPPED_LINES):
            kept.append(line)
    if given_open:
        raise MarkerError(f"{BEGIN_GIVEN!r} is never closed")
    if open_marker is not None:
        raise MarkerError(f"line {open_line}: {open_marker!r} is never closed")
    text = "".join(kept)
    if not source.endswith("\n") and text.endswith("\n"):
        text = text[:-1]
    return text


def _uncommented(line: str, indent: str, number: int) -> str:
    """A given line without its comment: ``indent + "# " + code`` becomes ``indent + code``."""
    if not line.strip():
        return line
    if not line.startswith(indent + "#"):
        raise MarkerError(f"line {number}: a given line must be commented out with '# ' at the "
                          f"indentation of {BEGIN_GIVEN!r}, got {line.rstrip()!r}")
    rest = line[len(indent) + 1:]
    if rest.startswith(" "):
        rest = rest[1:]
    return indent + rest if rest.strip() else "\n"


def exercise_notebook(solution: dict[str, Any], *, generated_from: str = "") -> dict[str, Any]:
    """The exercise notebook (nbformat 4 as a dict) for a solution notebook's dict."""
    notebook = copy.deepcopy(solution)
    cells = []
    for index, cell in enumerate(notebook.get("cells", [])):
        source = _joined(cell.get("source", ""))
        try:
            new_source = exercise_source(source, cell_type=cell.get("cell_type", "code"))
        except MarkerError as err:
            raise MarkerError(f"cell {index + 1}: {err}") from None
        if source.strip() and not new_source.strip():
            continue  # the cell held only hidden tests
        cell["source"] = new_source
        for key in STRIPPED_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    notebook["cells"] = cells
    metadata = notebook.setdefault("metadata", {})
    for key in STRIPPED_NOTEBOOK_METADATA:
        metadata.pop(key, None)
    if generated_from:
        metadata["minidecode"] = {
            "generated_from": generated_from,
            "generator": "python -m minidecode.course.exercises build",
        }
    return notebook


def render_notebook(notebook: dict[str, Any]) -> str:
    """Serialise as nbformat does: sources split into lines, sorted keys, one-space indent."""
    rendered = copy.deepcopy(notebook)
    for cell in rendered.get("cells", []):
        cell["source"] = _split_lines(_joined(cell.get("source", "")))
    return json.dumps(rendered, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def build(solutions_dir: Path, exercises_dir: Path, *, check_only: bool = False) -> list[str]:
    """Generate (or, with ``check_only``, compare) every exercise notebook.

    Returns the problems found: files that differ, are missing or have no solution. Writing mode
    fixes them and returns what it changed.
    """
    problems: list[str] = []
    expected_names = set()
    if not check_only:
        exercises_dir.mkdir(parents=True, exist_ok=True)
    for solution_path in sorted(solutions_dir.glob("*.ipynb")):
        expected_names.add(solution_path.name)
        solution = json.loads(solution_path.read_text(encoding="utf-8"))
        generated_from = f"{solutions_dir.name}/{solution_path.name}"
        try:
            text = render_notebook(exercise_notebook(solution, generated_from=generated_from))
        except MarkerError as err:
            raise MarkerError(f"{solution_path}: {err}") from None
        target = exercises_dir / solution_path.name
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            continue
        if check_only:
            how = "is missing" if current is None else "differs from"
            problems.append(f"{target} {how} what {solution_path} generates")
        else:
            target.write_text(text, encoding="utf-8")
            problems.append(f"wrote {target}")
    for stale in sorted(exercises_dir.glob("*.ipynb")) if exercises_dir.is_dir() else []:
        if stale.name not in expected_names:
            if check_only:
                problems.append(f"{stale} has no solution notebook")
            else:
                stale.unlink()
                problems.append(f"removed {stale}")
    return problems


def _joined(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


def _split_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _default_root() -> Path:
    package_parent = Path(__file__).resolve().parents[2]
    if (package_parent / "solutions").is_dir():
        return package_parent
    return Path.cwd()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minidecode.course.exercises",
        description="Generate exercises/ from solutions/ (nbgrader markers).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="write exercises/ from solutions/")
    build_parser.add_argument("--check", action="store_true",
                              help="only compare; exit 1 if exercises/ is not what build writes")
    build_parser.add_argument("--root", type=Path, default=None,
                              help="repository root holding solutions/ and exercises/")
    args = parser.parse_args(argv)

    root = Path(os.path.relpath(args.root or _default_root()))  # short paths in messages
    solutions_dir, exercises_dir = root / "solutions", root / "exercises"
    if not solutions_dir.is_dir():
        print(f"exercises: no solutions/ folder under {root}", file=sys.stderr)
        return 2
    try:
        problems = build(solutions_dir, exercises_dir, check_only=args.check)
    except (MarkerError, json.JSONDecodeError) as err:
        print(f"exercises: {err}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr if args.check else sys.stdout)
    if args.check:
        if problems:
            print("exercises: out of date; run `python -m minidecode.course.exercises build`",
                  file=sys.stderr)
            return 1
        print(f"exercises: {exercises_dir} matches {solutions_dir}")
    elif not problems:
        print(f"exercises: {exercises_dir} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
