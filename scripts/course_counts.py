"""The graded exercises counted, per chapter: ``docs/instructor/counts.md``.

For every solution notebook ``solutions/NN_name.ipynb`` (so a new chapter is counted by adding
one), this script writes one row per chapter and one per exercise:

- **exercises and points**: the ``@exercise`` declarations of ``minidecode/course/checks/chNN.py``;
- **solution lines**: the non-blank lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
  in the solution notebook's code cells (lines of a ``### BEGIN GIVEN`` region, code the student is
  handed, do not count), credited to the exercise whose function encloses the region;
- **fails on the stub**: the exercise's check is run on the function the freshly generated
  ``exercises/NN_name.ipynb`` defines, the ``NotImplementedError`` stub or the buggy code a
  find-the-bug exercise hands out (built from the notebook's own imports and definitions, in
  process; ``--grade-notebooks`` grades the whole notebook in a fresh kernel instead, as
  ``python -m minidecode grade`` does, which takes minutes a chapter); the check must not pass;
- **rejects a typical mistake**: every deliberately wrong variant listed for the exercise in
  ``tests/test_exercise_rules.py``'s ``RULES`` (which also reads ``tests/rules_chNN.py``) is run
  through the exercise's check (``run_check``); an exercise counts when it has at least one
  variant and its check rejects every one of them.

Both verdicts come from running the checks, never from reading code. That takes minutes, so the
file also records, per chapter, a fingerprint of everything the verdicts depend on besides the
package's reference functions: the grader, the chapter's checks module, its exercise notebook and
the variants' sources. A run reuses the recorded verdicts of a chapter whose fingerprint has not
changed (``--all`` runs everything). ``--check`` recomputes the counts and fingerprints (seconds,
no check runs) and fails unless the committed file is exactly what a full run would write with
the recorded verdicts. ``tests/test_course_counts.py`` asks for its cheap half only
(:func:`stale_counts`: the exercises, points and solution lines of every row).

    python scripts/course_counts.py            # run the checks, write docs/instructor/counts.md
    python scripts/course_counts.py --all      # the same, without reusing unchanged chapters
    python scripts/course_counts.py --check    # quick: is the committed file up to date?

On a busy machine, split the run across processes and merge the parts:

    python scripts/course_counts.py --only 04 --save /tmp/04.json     # one process a part
    python scripts/course_counts.py --reuse-from /tmp/04.json ...     # render, reusing them
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUT = REPO / "docs" / "instructor" / "counts.md"
SOLUTIONS = REPO / "solutions"
EXERCISES = REPO / "exercises"
RULES_FILE = REPO / "tests" / "test_exercise_rules.py"
GRADER = REPO / "minidecode" / "course" / "grading.py"
VERDICTS_MARK = "<!-- verdicts (written by scripts/course_counts.py; do not edit): "

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_GIVEN, END_GIVEN = "### BEGIN GIVEN", "### END GIVEN"
DEFINITION = re.compile(r"^(?P<indent>\s*)(?:async\s+)?(?:def|class)\s+(?P<name>\w+)")


@dataclass
class ExerciseCount:
    exercise_id: str
    name: str
    points: int
    solution_lines: int = 0


@dataclass
class ChapterCount:
    chapter: str
    notebook: str
    exercises: list[ExerciseCount]
    unassigned_lines: int = 0  # solution lines outside any exercise's function (helpers)
    fingerprint: str = ""

    @property
    def points(self) -> int:
        return sum(ex.points for ex in self.exercises)

    @property
    def solution_lines(self) -> int:
        return sum(ex.solution_lines for ex in self.exercises) + self.unassigned_lines


@dataclass
class Verdicts:
    """What running the checks found, by exercise id."""

    stub: dict[str, str] = field(default_factory=dict)  # the check's status on the stub
    variants: dict[str, dict[str, str]] = field(default_factory=dict)  # variant -> status


# ------------------------------------------------------------------------------ static counts


def solution_lines_by_function(notebook: Path) -> dict[str | None, int]:
    """Non-blank solution lines of a notebook's code cells, by the enclosing function's name
    (``None`` for a region outside any function)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    counts: dict[str | None, int] = {}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).splitlines()
        inside = given = False
        owner: str | None = None
        for number, line in enumerate(source):
            marker = line.strip()
            if marker == BEGIN_SOLUTION:
                inside, owner = True, _enclosing_definition(source[:number], line)
                continue
            if marker == END_SOLUTION:
                inside = False
                continue
            if marker == BEGIN_GIVEN:
                given = True
                continue
            if marker == END_GIVEN:
                given = False
                continue
            if inside and not given and marker:
                counts[owner] = counts.get(owner, 0) + 1
    return counts


def _enclosing_definition(before: list[str], marker_line: str) -> str | None:
    indent = len(marker_line) - len(marker_line.lstrip())
    for line in reversed(before):
        match = DEFINITION.match(line)
        if match and len(match["indent"]) < indent:
            return match["name"]
    return None


def static_counts() -> list[ChapterCount]:
    from minidecode.course.grading import exercises_for_chapter

    chapters = []
    for notebook in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")):
        chapter = notebook.name[:2]
        declared = exercises_for_chapter(chapter)
        by_function = solution_lines_by_function(notebook)
        exercises = [ExerciseCount(ex.exercise_id, ex.name, ex.points,
                                   by_function.pop(ex.name, 0)) for ex in declared.values()]
        chapters.append(ChapterCount(chapter, notebook.name, exercises,
                                     unassigned_lines=sum(by_function.values())))
    return chapters


def fingerprint(chapter: ChapterCount) -> str:
    """sha256 (first 16 hex digits) of what the chapter's verdicts depend on, apart from the
    package's reference functions: the grader, checks/chNN.py and the checks' shared helpers,
    the exercise notebook's code, and the wrong variants' sources (tests/test_exercise_rules.py
    and every tests/rules_ch*.py that names one of the chapter's exercises)."""
    digest = hashlib.sha256()
    checks = REPO / "minidecode" / "course" / "checks"
    helpers = [path for path in sorted(checks.glob("*.py"))
               if not re.match(r"ch\d\d\.py$", path.name)]
    rules = [path for path in sorted(RULES_FILE.parent.glob("rules_ch*.py"))
             if re.search(rf"['\"]{chapter.chapter}\.\d", path.read_text(encoding="utf-8"))]
    for path in [GRADER, checks / f"ch{chapter.chapter}.py", *helpers, RULES_FILE, *rules]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    exercise_notebook = EXERCISES / chapter.notebook
    if exercise_notebook.is_file():
        cells = json.loads(exercise_notebook.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                digest.update("".join(cell["source"]).encode())
    else:
        digest.update(b"<no exercise notebook>")
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- running checks


def notebook_definitions(notebook: Path) -> dict[str, object]:
    """What a notebook defines, built from its own code: every top-level import, function and
    class definition of its code cells, run in order (a later definition replaces an earlier
    one). Nothing else runs, so no model is loaded and no cell's work is repeated; a statement
    that fails (a default argument naming a notebook variable) is skipped."""
    namespace: dict[str, object] = {"__name__": f"exercises.{notebook.stem}"}
    kept = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        source = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if not isinstance(node, kept):
                continue
            code = compile(ast.Module(body=[node], type_ignores=[]), str(notebook), "exec")
            try:
                exec(code, namespace)
            except Exception:  # noqa: BLE001 - a definition that needs the notebook's state
                continue
    return namespace


def load_rules() -> list[tuple[str, str, object]]:
    spec = importlib.util.spec_from_file_location("_course_counts_rules", RULES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.RULES)


def run_checks(chapters: list[ChapterCount], log=print,
               reuse: tuple[dict[str, str], Verdicts] | None = None,
               grade_notebooks: bool = False) -> Verdicts:
    """Check every fresh exercise notebook's stubs, and run every rule variant through its check.

    ``reuse``: the fingerprints and verdicts of an earlier run; a chapter whose fingerprint is
    unchanged keeps its recorded verdicts instead of running its checks again.
    ``grade_notebooks``: grade each exercise notebook in a fresh kernel instead."""
    from minidecode.course.grading import get_exercise, grade_notebook, run_check

    verdicts = Verdicts()
    fresh = []
    for chapter in chapters:
        ids = [ex.exercise_id for ex in chapter.exercises]
        if reuse and reuse[0].get(chapter.chapter) == chapter.fingerprint and all(
                eid in reuse[1].stub for eid in ids):
            for eid in ids:
                verdicts.stub[eid] = reuse[1].stub[eid]
                if eid in reuse[1].variants:
                    verdicts.variants[eid] = dict(reuse[1].variants[eid])
            log(f"chapter {chapter.chapter}: unchanged, verdicts reused")
            continue
        fresh.append(chapter)
        start = time.perf_counter()
        notebook = EXERCISES / chapter.notebook
        if not notebook.is_file():
            pass
        elif grade_notebooks:
            for result in grade_notebook(notebook).results:
                verdicts.stub[result.exercise_id] = result.status
        else:
            defined = notebook_definitions(notebook)
            for ex in chapter.exercises:
                fn = defined.get(ex.name)
                verdicts.stub[ex.exercise_id] = ("missing" if fn is None else
                                                 run_check(get_exercise(ex.exercise_id), fn).status)
        log(f"chapter {chapter.chapter}: stubs checked in {time.perf_counter() - start:.0f} s")
    wanted = {ex.exercise_id for chapter in fresh for ex in chapter.exercises}
    for exercise_id, _name, wrong in load_rules():
        if exercise_id not in wanted:
            continue
        start = time.perf_counter()
        status = run_check(get_exercise(exercise_id), wrong).status
        verdicts.variants.setdefault(exercise_id, {})[wrong.__name__] = status
        log(f"{exercise_id} {wrong.__name__}: {status} ({time.perf_counter() - start:.1f} s)")
    return verdicts


# ----------------------------------------------------------------------------------- writing


def _share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.0f}%)" if total else "-"


def render(chapters: list[ChapterCount], verdicts: Verdicts) -> str:
    def stub_fails(exercise_id: str) -> bool:
        return verdicts.stub.get(exercise_id, "passed") != "passed"

    def variants_of(exercise_id: str) -> dict[str, str]:
        return verdicts.variants.get(exercise_id, {})

    def mistake_rejected(exercise_id: str) -> bool:
        found = variants_of(exercise_id)
        return bool(found) and all(status != "passed" for status in found.values())

    every = [ex for chapter in chapters for ex in chapter.exercises]
    lines = [
        "# The graded exercises, counted",
        "",
        "Generated by `python scripts/course_counts.py` from `solutions/`, `exercises/`,",
        "`minidecode/course/checks/` and the wrong variants of `tests/test_exercise_rules.py`",
        "(with `tests/rules_chNN.py`); `tests/test_course_counts.py` fails when this file is out",
        "of date. Do not edit it by hand.",
        "",
        "- *solution lines*: non-blank lines between `### BEGIN SOLUTION` and `### END SOLUTION`",
        "  in the solution notebook (code handed to the student in a `### BEGIN GIVEN` region not",
        "  counted); *median* is over the chapter's exercises.",
        "- *fails on the stub*: the exercise's check fails on the function the freshly generated",
        "  exercise notebook defines: the `NotImplementedError` stub, or the buggy code a",
        "  find-the-bug exercise hands out (*check on the stub* below gives the check's verdict).",
        "- *rejects a typical mistake*: the exercise has at least one deliberately wrong variant",
        "  (a typical mistake that breaks one stated rule) and its check fails on every one;",
        "  *variants rejected* counts the variants themselves. The bar for both shares is 100%.",
        "",
        "## Per chapter",
        "",
        "| chapter | exercises | points | solution lines | median per exercise "
        "| fails on the stub | rejects a typical mistake | variants rejected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    unmeasured = [chapter.chapter for chapter in chapters
                  if any(ex.exercise_id not in verdicts.stub for ex in chapter.exercises)]
    for chapter in chapters:
        ids = [ex.exercise_id for ex in chapter.exercises]
        per_exercise = [ex.solution_lines for ex in chapter.exercises]
        median = f"{statistics.median(per_exercise):g}" if per_exercise else "-"
        variants = [status for eid in ids for status in variants_of(eid).values()]
        shares = ("| not measured " * 3 if chapter.chapter in unmeasured else
                  f"| {_share(sum(map(stub_fails, ids)), len(ids))} "
                  f"| {_share(sum(map(mistake_rejected, ids)), len(ids))} "
                  f"| {_share(sum(s != 'passed' for s in variants), len(variants))} ")
        lines.append(
            f"| {chapter.notebook.removesuffix('.ipynb')} | {len(ids)} | {chapter.points} "
            f"| {chapter.solution_lines} | {median} {shares}|"
        )
    all_ids = [ex.exercise_id for chapter in chapters if chapter.chapter not in unmeasured
               for ex in chapter.exercises]
    all_variants = [status for eid in all_ids for status in variants_of(eid).values()]
    all_lines = [ex.solution_lines for ex in every]
    lines.append(
        f"| **all** | {len(every)} | {sum(ex.points for ex in every)} "
        f"| {sum(chapter.solution_lines for chapter in chapters)} "
        f"| {f'{statistics.median(all_lines):g}' if all_lines else '-'} "
        f"| {_share(sum(map(stub_fails, all_ids)), len(all_ids))} "
        f"| {_share(sum(map(mistake_rejected, all_ids)), len(all_ids))} "
        f"| {_share(sum(s != 'passed' for s in all_variants), len(all_variants))} |"
    )
    if unmeasured:
        lines += ["", "Not measured yet (the shares above leave them out): chapters "
                  + ", ".join(unmeasured) + ". Run `python scripts/course_counts.py`."]
    helpers = [c for c in chapters if c.unassigned_lines]
    if helpers:
        lines += ["", "Solution lines outside any exercise's function (helpers the solution "
                  "defines), included in the chapter's total: "
                  + ", ".join(f"{c.chapter}: {c.unassigned_lines}" for c in helpers) + "."]
    lines += [
        "",
        "## Per exercise",
        "",
        "| exercise | function | points | solution lines | check on the stub "
        "| wrong variants (rejected / listed) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for ex in every:
        found = variants_of(ex.exercise_id)
        rejected = sum(status != "passed" for status in found.values())
        stub = verdicts.stub.get(ex.exercise_id, "not measured")
        lines.append(f"| {ex.exercise_id} | `{ex.name}` | {ex.points} | {ex.solution_lines} "
                     f"| {stub} | {rejected} / {len(found)} |")
    passed_variants = sorted(f"{eid} {name}" for eid, found in verdicts.variants.items()
                             for name, status in found.items() if status == "passed")
    if passed_variants:
        lines += ["", "Variants that the check wrongly accepts: "
                  + ", ".join(f"`{v}`" for v in passed_variants) + "."]
    record = {
        "fingerprints": {chapter.chapter: "" if chapter.chapter in unmeasured
                         else chapter.fingerprint for chapter in chapters},
        "stub": dict(sorted(verdicts.stub.items())),
        "variants": {eid: dict(sorted(found.items()))
                     for eid, found in sorted(verdicts.variants.items())},
    }
    lines += ["", VERDICTS_MARK + json.dumps(record, sort_keys=True) + " -->", ""]
    return "\n".join(lines)


def recorded(text: str) -> tuple[dict[str, str], Verdicts]:
    """The fingerprints and verdicts a written counts.md holds."""
    for line in text.splitlines():
        if line.startswith(VERDICTS_MARK) and line.endswith(" -->"):
            record = json.loads(line[len(VERDICTS_MARK):-len(" -->")])
            return record["fingerprints"], Verdicts(record["stub"], record["variants"])
    raise ValueError("no verdicts record in the file; run scripts/course_counts.py")


def _from_json(record: dict) -> tuple[dict[str, str], Verdicts]:
    return record["fingerprints"], Verdicts(record["stub"], record["variants"])


def check_up_to_date(path: Path = OUT) -> list[str]:
    """Empty when ``path`` is what a full run would write now; otherwise what is stale."""
    if not path.is_file():
        return [f"{path} does not exist"]
    text = path.read_text(encoding="utf-8")
    chapters = static_counts()
    fingerprints, verdicts = recorded(text)
    problems = []
    for chapter in chapters:
        chapter.fingerprint = fingerprint(chapter)
        recorded_print = fingerprints.get(chapter.chapter)
        if recorded_print == "":  # recorded as not measured: the file says so in its tables
            continue
        if recorded_print != chapter.fingerprint:
            problems.append(f"chapter {chapter.chapter}: its checks, exercise notebook or wrong "
                            "variants changed since the verdicts were recorded")
    gone = sorted(set(fingerprints) - {chapter.chapter for chapter in chapters})
    problems += [f"chapter {chapter} is recorded but has no solution notebook" for chapter in gone]
    if not problems and render(chapters, verdicts) != text:
        problems.append("the counts (exercises, points or solution lines) changed")
    return problems


def _table_rows(text: str) -> dict[str, list[str]]:
    """The markdown table rows of a counts.md, by their first cell (a chapter's notebook name,
    ``**all**`` or an exercise id), each as its list of cells."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.setdefault(cells[0], cells)
    return rows


def stale_counts(path: Path = OUT) -> list[str]:
    """The cheap half of ``--check`` (no check runs, seconds): empty when every chapter row and
    exercise row of ``path`` has the exercises, points and solution lines that ``solutions/`` and
    the checks modules hold now, and the file lists no other exercise or chapter. The verdicts
    (fails on the stub, variants rejected) and their fingerprints are not compared: they change
    whenever a check, a rule or the grader does, and take minutes to measure again."""
    if not path.is_file():
        return [f"{path} does not exist"]
    rows = _table_rows(path.read_text(encoding="utf-8"))
    chapters = static_counts()
    problems = []

    def compare(key: str, wanted: list[str], what: str) -> None:
        found = rows.get(key, [key])[1:1 + len(wanted)]
        if found != wanted:
            problems.append(f"{key}: {what} {' / '.join(found) or 'missing'} in the file, "
                            f"{' / '.join(wanted)} now")

    every = [ex for chapter in chapters for ex in chapter.exercises]
    for chapter in chapters:
        compare(chapter.notebook.removesuffix(".ipynb"),
                [str(len(chapter.exercises)), str(chapter.points), str(chapter.solution_lines)],
                "exercises / points / solution lines")
        for ex in chapter.exercises:
            compare(ex.exercise_id, [f"`{ex.name}`", str(ex.points), str(ex.solution_lines)],
                    "function / points / solution lines")
    compare("**all**", [str(len(every)), str(sum(ex.points for ex in every)),
                        str(sum(chapter.solution_lines for chapter in chapters))],
            "exercises / points / solution lines")
    known = {ex.exercise_id for ex in every} | {"**all**", "chapter", "exercise"} | {
        chapter.notebook.removesuffix(".ipynb") for chapter in chapters}
    problems += [f"{key}: in the file, but no such chapter or exercise now"
                 for key in sorted(set(rows) - known)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only say whether the committed file is up to date (no check runs)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", action="append", metavar="NN",
                        help="run only chapter NN's checks (repeatable) and save the verdicts "
                        "with --save; for splitting a run across processes")
    parser.add_argument("--save", type=Path, help="with --only: where to write the verdicts (JSON)")
    parser.add_argument("--reuse-from", type=Path, action="append", default=[],
                        help="verdicts saved by --save to reuse where the fingerprints match")
    parser.add_argument("--no-run", action="store_true",
                        help="run no check: write the file from reusable verdicts only, leaving "
                        "the other chapters 'not measured'")
    parser.add_argument("--grade-notebooks", action="store_true",
                        help="grade each fresh exercise notebook in a kernel (minutes a chapter)")
    parser.add_argument("--all", action="store_true",
                        help="run every chapter's checks, even where the recorded verdicts hold")
    args = parser.parse_args(argv)
    if args.only and not args.save:
        parser.error("--only needs --save: a part of the chapters is not a counts.md")
    if args.check:
        problems = check_up_to_date(args.out)
        for problem in problems:
            print(f"{args.out.relative_to(REPO)} is stale: {problem}")
        if problems:
            print("run: python scripts/course_counts.py")
        return 1 if problems else 0
    chapters = static_counts()
    for chapter in chapters:
        chapter.fingerprint = fingerprint(chapter)
    fingerprints: dict[str, str] = {}
    reused = Verdicts()
    sources = [path.read_text(encoding="utf-8") for path in args.reuse_from]
    if not args.all and args.out.is_file():
        sources.append(args.out.read_text(encoding="utf-8"))
    for text in sources:
        try:
            found, verdicts = (recorded(text) if text.lstrip().startswith("#")
                               else _from_json(json.loads(text)))
        except ValueError:
            continue
        for chapter, value in found.items():
            fingerprints.setdefault(chapter, value)
        for eid, status in verdicts.stub.items():
            reused.stub.setdefault(eid, status)
        for eid, found_variants in verdicts.variants.items():
            reused.variants.setdefault(eid, found_variants)
    if args.only:
        chapters = [chapter for chapter in chapters if chapter.chapter in args.only]
    if args.no_run:
        verdicts = Verdicts()
        for chapter in chapters:
            ids = [ex.exercise_id for ex in chapter.exercises]
            if fingerprints.get(chapter.chapter) == chapter.fingerprint and all(
                    eid in reused.stub for eid in ids):
                verdicts.stub.update({eid: reused.stub[eid] for eid in ids})
                verdicts.variants.update({eid: reused.variants[eid] for eid in ids
                                          if eid in reused.variants})
        args.out.write_text(render(chapters, verdicts), encoding="utf-8")
        print(f"wrote {args.out} (no check run)")
        return 0
    verdicts = run_checks(chapters, log=lambda line: print(line, flush=True),
                          reuse=(fingerprints, reused), grade_notebooks=args.grade_notebooks)
    if args.save:
        args.save.write_text(json.dumps({
            "fingerprints": {chapter.chapter: chapter.fingerprint for chapter in chapters},
            "stub": verdicts.stub, "variants": verdicts.variants}), encoding="utf-8")
        print(f"saved {args.save}")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(chapters, verdicts), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
