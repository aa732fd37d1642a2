"""Graded exercises: ``check()`` inside a notebook, ``grade`` on the command line.

Each chapter's exercises live in ``minidecode/course/checks/chNN.py``: one
``@exercise(...)``-decorated function per exercise, which yields seeded :class:`Case` objects, plus
an optional hypothesis strategy for random cases. The reference implementation is the package's own
function (chapter 00 uses :func:`minidecode.course.tour.softmax_with_temperature`), so the check
compares the student's function with the one the course ships, case by case:

    >>> check("00.1", softmax_with_temperature)
    ✓ 00.1 softmax_with_temperature: 25/25 cases passed
    True

A failing function prints the first failing case, numbered among all the cases ("failed case 7
of 29") with the rule it tests when it has a name, as "yours vs expected", with the first position
where they differ (equal infinities and equal NaNs count as equal); it returns False. Changing an
input in place fails too. A stub that still raises ``NotImplementedError`` prints "not implemented
yet". In a notebook, end the check line with ``;`` so that Jupyter does not echo the returned bool.

``python -m minidecode grade exercises/NN_name.ipynb`` executes a whole notebook in a fresh kernel
(see :func:`grade_notebook`), then checks every exercise of chapter NN against the function of the
same name that the notebook defined, and prints a score table. Only work written in the notebook
earns points (see :func:`_grade_one`): a name bound to an imported function, e.g.
``from minidecode.sampling import min_p_filter``, scores 0 ("imported"), and so does a function of
the notebook that runs the course's own answer to compute its result ("delegates").
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
import io
import json
import linecache
import math
import os
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Case",
    "CheckResult",
    "Exercise",
    "GradeError",
    "GradeReport",
    "check",
    "exercise",
    "exercises_for_chapter",
    "get_exercise",
    "grade_notebook",
    "load_notebook",
    "run_check",
]

EXERCISE_ID = re.compile(r"^(?P<chapter>\d{2})\.(?P<number>\d+)$")
NOTEBOOK_NAME = re.compile(r"^(?P<chapter>\d{2})_[\w.-]*\.ipynb$")
MAX_SHOWN_CHARS = 300


class Case:
    """Positional arguments of one call, e.g. ``Case(torch.tensor([1.0, 2.0]), 0.5)``, and
    optionally the rule or role it tests, ``name="reject branch: the residual"``, which a failure
    report names."""

    __slots__ = ("args", "name")

    def __init__(self, *args: Any, name: str = "") -> None:
        self.args = args
        self.name = name

    def __repr__(self) -> str:
        return f"Case({', '.join(_show(arg) for arg in self.args)})"


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: what to call it, the reference to compare with, and its cases."""

    exercise_id: str
    name: str
    reference: Callable[..., Any]
    seeded_cases: Callable[[], Iterable[Case]]
    strategy: Any = None  # a hypothesis SearchStrategy of Case, or None
    max_examples: int = 20
    returns: type | tuple[type, ...] | None = None
    points: int = 1
    atol: float = 1e-5
    rtol: float = 1e-4
    stateful: tuple[str, ...] = ()  # parameters whose objects the call may change (see exercise)
    answers: tuple[Callable[..., Any], ...] = ()  # more of the course's answer (see exercise)
    scorer: Callable[[Callable[..., Any]], tuple[bool, str]] | None = None  # see exercise

    @property
    def chapter(self) -> str:
        return self.exercise_id.split(".")[0]

    @property
    def parameters(self) -> list[str]:
        return list(inspect.signature(self.reference).parameters)


def exercise(
    exercise_id: str,
    *,
    reference: Callable[..., Any],
    name: str | None = None,
    returns: type | tuple[type, ...] | None = None,
    strategy: Any = None,
    max_examples: int = 20,
    points: int = 1,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    stateful: tuple[str, ...] = (),
    answers: Iterable[Callable[..., Any]] = (),
    scorer: Callable[[Callable[..., Any]], tuple[bool, str]] | None = None,
) -> Callable[[Callable[[], Iterable[Case]]], Exercise]:
    """Decorate a function yielding seeded :class:`Case` objects to declare an exercise.

    Args:
        exercise_id: ``"NN.k"``, chapter NN, exercise k.
        reference: the course's own implementation; the student's function must agree with it.
        name: the function name the student defines; defaults to ``reference.__name__``.
        returns: the type(s) the student's return value must have, e.g. ``torch.Tensor``.
        strategy: hypothesis strategy drawing random :class:`Case` objects, run after the seeded
            cases with a fixed seed (``derandomize=True``) so the output is reproducible.
        max_examples: how many random cases hypothesis draws (>= 0).
        points: the exercise's weight in ``grade`` (>= 1).
        atol, rtol: float tolerances, as in ``torch.allclose``.
        stateful: names of the reference's parameters that hold objects stateful by design (a
            cache policy remembers what it saw and what it kept), which the call may change; every
            other argument must be left as it was. A model (``torch.nn.Module``) argument is
            compared by its weights.
        answers: more functions or classes of the package that compute the answer, or the part
            of it the student is asked to write (for a whole decode loop: the package's
            ``decode_steps``, ``process_scores`` ...); a notebook function that runs any of them
            scores 0 in ``grade`` ("delegates"), as one that runs the reference does.
        scorer: for an open-ended exercise (the capstone, whose answers may rightly differ from
            the reference's): ``scorer(fn) -> (passed, report)`` measures the student's function
            instead of comparing it with ``reference`` case by case; a ``NotImplementedError``
            from the stub means "not implemented", any other error from the student's code is a
            failure whose message is the report. ``reference`` still names the course's answer,
            which the student's function must not run, and the seeded cases are not run.
    """
    if not EXERCISE_ID.match(exercise_id):
        raise ValueError(f"exercise_id must look like '03.2', got {exercise_id!r}")
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    unknown = set(stateful) - set(inspect.signature(reference).parameters)
    if unknown:
        raise ValueError(f"stateful must name parameters of {reference.__name__}, got "
                         f"{sorted(unknown)}")

    def declare(seeded_cases: Callable[[], Iterable[Case]]) -> Exercise:
        return Exercise(
            exercise_id=exercise_id,
            name=name or reference.__name__,
            reference=reference,
            seeded_cases=seeded_cases,
            strategy=strategy,
            max_examples=max_examples,
            returns=returns,
            points=points,
            atol=atol,
            rtol=rtol,
            stateful=tuple(stateful),
            answers=tuple(answers),
            scorer=scorer,
        )

    return declare


def exercises_for_chapter(chapter: str) -> dict[str, Exercise]:
    """All exercises of chapter ``"NN"``, found in ``minidecode.course.checks.chNN``, by id."""
    module_name = f"minidecode.course.checks.ch{chapter}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise ValueError(f"no graded exercises for chapter {chapter!r} ({module_name})") from None
    found = [value for value in vars(module).values() if isinstance(value, Exercise)]
    found.sort(key=lambda ex: int(ex.exercise_id.split(".")[1]))
    return {ex.exercise_id: ex for ex in found}


def get_exercise(exercise_id: str) -> Exercise:
    """The exercise registered under ``exercise_id`` (``"NN.k"``)."""
    match = EXERCISE_ID.match(str(exercise_id))
    if not match:
        raise ValueError(f"exercise_id must look like '03.2', got {exercise_id!r}")
    chapter_exercises = exercises_for_chapter(match["chapter"])
    if exercise_id not in chapter_exercises:
        known = ", ".join(chapter_exercises) or "none"
        chapter = match["chapter"]
        raise ValueError(f"unknown exercise {exercise_id!r}; chapter {chapter} has {known}")
    return chapter_exercises[exercise_id]


# --------------------------------------------------------------------------------------------
# check()


@dataclass
class CheckResult:
    """What one check found. ``status`` is one of: passed, failed, not implemented,
    wrong signature, wrong type, missing, checker error; and, from ``grade`` only, imported (the
    name is not bound to a function written in the notebook) or delegates (the notebook's function
    runs the course's own answer)."""

    exercise_id: str
    name: str
    status: str
    cases_passed: int = 0
    cases_run: int = 0
    detail: str = ""
    points: int = 1
    cases_total: int = 0  # seeded cases plus the random cases planned
    failed_case: int = 0  # the number of the first failing case, 0 when none failed

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def earned(self) -> int:
        return self.points if self.passed else 0

    def report(self) -> str:
        head = f"{self.exercise_id} {self.name}"
        if self.passed and self.detail:  # a scored exercise: its report
            return f"✓ {head}: {self.detail}"
        if self.passed:
            return f"✓ {head}: {self.cases_passed}/{self.cases_run} cases passed"
        if self.status == "not implemented":
            return f"✗ {head}: not implemented yet (the stub still raises NotImplementedError)"
        return f"✗ {head}: {self.detail}"


SHORT_ANSWER_HIDDEN = "(not shown for a short answer: run the cells above and read again)"


@dataclass
class _Failure:
    """A case on which the student's function disagrees with the reference."""

    status: str  # "failed" or "wrong type"
    case: Case
    yours: str
    expected: str
    why: str = ""


class _CaseFailed(Exception):
    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.why)
        self.failure = failure


def check(exercise_id: str, fn: Callable[..., Any]) -> bool:
    """Run exercise ``exercise_id``'s reference cases on ``fn``; print the verdict; return it.

    In a notebook cell write ``check("00.1", softmax_with_temperature);``: the ``;`` keeps
    Jupyter from echoing the returned bool under the verdict.

    Example:
        >>> check("00.1", softmax_with_temperature)
        ✓ 00.1 softmax_with_temperature: 25/25 cases passed
        True
    """
    result = run_check(get_exercise(exercise_id), fn)
    print(result.report())
    return result.passed


def run_check(ex: Exercise, fn: Callable[..., Any]) -> CheckResult:
    """Compare ``fn`` with ``ex.reference`` on the seeded cases, then on hypothesis' cases."""
    result = CheckResult(ex.exercise_id, ex.name, status="passed", points=ex.points)
    expected_call = f"{ex.name}({', '.join(ex.parameters)})"
    if not callable(fn):
        result.status = "wrong signature"
        result.detail = f"expected a function {expected_call}, got {_type_name(fn)} {_show(fn)}"
        return result
    if ex.scorer is not None:
        return _run_scorer(ex, fn, result)
    signature_problem = _signature_problem(ex, fn)
    if signature_problem:
        result.status = "wrong signature"
        result.detail = f"expected a function {expected_call}; {signature_problem}"
        return result

    try:
        seeded = list(ex.seeded_cases())
        random_planned = ex.max_examples if ex.strategy is not None else 0
        result.cases_total = len(seeded) + random_planned
        for case in seeded:
            result.cases_run += 1
            failure = _run_case(ex, fn, case)
            if failure is not None:
                return _failed(result, failure, case_number=result.cases_run)
            result.cases_passed += 1
        if random_planned > 0:
            result = _run_random_cases(ex, fn, result)
            if result.passed:  # hypothesis may run fewer when it runs out of distinct inputs
                result.cases_total = result.cases_run
            return result
    except NotImplementedError:
        result.status = "not implemented"
    except Exception as err:  # a bug in the checker itself, not in the student's function
        result.status = "checker error"
        result.detail = f"the checker itself failed ({_type_name(err)}: {err}); please report it"
    return result


def _run_scorer(ex: Exercise, fn: Callable[..., Any], result: CheckResult) -> CheckResult:
    """An open-ended exercise: ``ex.scorer(fn)`` decides, as one case."""
    result.cases_total = result.cases_run = 1
    try:
        passed, report = ex.scorer(fn)
    except NotImplementedError:
        result.status = "not implemented"
        return result
    except Exception as err:  # the student's code (or its output) failed while being scored
        result.status = "failed"
        result.failed_case = 1
        result.detail = f"scoring stopped: {_raised(err)}"
        return result
    result.status = "passed" if passed else "failed"
    result.cases_passed = int(passed)
    result.failed_case = 0 if passed else 1
    result.detail = report
    return result


def _signature_problem(ex: Exercise, fn: Callable[..., Any]) -> str:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature; let the call decide
        return ""
    placeholders = [object()] * len(ex.parameters)
    try:
        signature.bind(*placeholders)
    except TypeError:
        fn_name = getattr(fn, "__name__", type(fn).__name__)
        count = len(ex.parameters)
        plural = "s" * (count != 1)
        return f"it must accept {count} positional argument{plural}, yours is {fn_name}{signature}"
    return ""


def _run_case(ex: Exercise, fn: Callable[..., Any], case: Case) -> _Failure | None:
    """None when ``fn`` agrees with the reference on ``case``. Lets NotImplementedError through."""
    expected, expected_error = _call(ex.reference, case)
    if isinstance(expected_error, NotImplementedError):
        raise RuntimeError(f"reference {ex.reference.__name__} is not implemented")
    given = copy.deepcopy(case.args)
    try:
        yours, your_error = fn(*given), None
    except NotImplementedError:
        raise
    except Exception as err:
        yours, your_error = None, err
    changed = _changed_argument(ex, given, case.args)
    if changed:
        shown = _show(yours) if your_error is None else _raised(your_error)
        wanted = _show(expected) if expected_error is None else _raised(expected_error)
        return _Failure("failed", case, shown, wanted, why=changed)

    if expected_error is not None:
        if your_error is None:
            return _Failure("failed", case, f"returned {_show(yours)}", _raised(expected_error))
        if isinstance(your_error, type(expected_error)):
            return None
        return _Failure("failed", case, _raised(your_error), _raised(expected_error))
    if your_error is not None:
        return _Failure("failed", case, _raised(your_error), _show(expected))
    if ex.returns is not None and not isinstance(yours, ex.returns):
        wanted = " or ".join(_type_name(t) for t in _as_tuple(ex.returns))
        return _Failure(
            "wrong type", case, _show(yours), _show(expected),
            why=f"expected the return value to be a {wanted}, got {_type_name(yours)}",
        )
    difference = _difference(yours, expected, ex.atol, ex.rtol)
    if difference:
        return _Failure("failed", case, _show(yours), _show(expected), why=difference)
    return None


def _changed_argument(ex: Exercise, given: tuple[Any, ...], original: tuple[Any, ...]) -> str:
    """Empty when the call left its arguments as they were; otherwise which one it changed."""
    for index, (now, before) in enumerate(zip(given, original)):
        if index < len(ex.parameters) and ex.parameters[index] in ex.stateful:
            continue
        difference = _difference(now, before, atol=0.0, rtol=0.0, labels=("now", "before"))
        if difference:
            name = ex.parameters[index] if index < len(ex.parameters) else f"#{index + 1}"
            return (f"your function changed its argument {name} in place ({difference}); "
                    "leave the inputs as they are and return a new value")
    return ""


def _call(function: Callable[..., Any], case: Case) -> tuple[Any, Exception | None]:
    try:
        return function(*copy.deepcopy(case.args)), None
    except Exception as err:
        return None, err


def _failed(
    result: CheckResult, failure: _Failure, case_number: int, note: str = ""
) -> CheckResult:
    result.status = failure.status
    result.failed_case = case_number
    name = f" ({failure.case.name})" if failure.case.name else ""
    where = f"failed case {case_number} of {result.cases_total}{name}{note}"
    lines = [
        f"{failure.why} ({where})" if failure.status == "wrong type" else where,
        f"  input:    {_show_args(failure.case)}",
        f"  yours:    {failure.yours}",
        # A short answer (a function of no arguments) would give itself away: hide its value.
        f"  expected: {failure.expected if failure.case.args else SHORT_ANSWER_HIDDEN}",
    ]
    if failure.why and failure.status != "wrong type":
        lines.append(f"  problem:  {failure.why}")
    result.detail = "\n".join(lines)
    return result


def _run_random_cases(ex: Exercise, fn: Callable[..., Any], result: CheckResult) -> CheckResult:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    first_failure_at: list[int] = []

    @settings(
        max_examples=ex.max_examples,
        derandomize=True,  # same cases on every run, so notebook outputs are reproducible
        database=None,
        deadline=None,
        print_blob=False,
        verbosity=Verbosity.quiet,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(ex.strategy)
    def one_random_case(case: Case) -> None:
        if not first_failure_at:
            result.cases_run += 1
        failure = _run_case(ex, fn, case)
        if failure is not None:
            if not first_failure_at:
                first_failure_at.append(result.cases_run)
            raise _CaseFailed(failure)
        if not first_failure_at:
            result.cases_passed += 1

    try:
        one_random_case()
    except Exception as err:  # hypothesis re-raises the shrunk failure, sometimes in a group
        case_failed = _find_case_failed(err)
        if case_failed is None:
            raise
        note = ": a random case, shrunk to the smallest failing input found"
        return _failed(result, case_failed.failure, first_failure_at[0], note)
    return result


def _find_case_failed(err: BaseException) -> _CaseFailed | None:
    if isinstance(err, _CaseFailed):
        return err
    for inner in getattr(err, "exceptions", ()):
        found = _find_case_failed(inner)
        if found is not None:
            return found
    if err.__cause__ is not None:
        return _find_case_failed(err.__cause__)
    return None


def _difference(
    yours: Any, expected: Any, atol: float, rtol: float,
    labels: tuple[str, str] = ("yours", "expected"),
) -> str:
    """Empty when ``yours`` matches ``expected``; otherwise why not, in one line. For tensors,
    the first differing position (in row-major order) with both values; equal infinities and
    equal NaNs count as equal."""
    torch = sys.modules.get("torch")
    mine, theirs = labels
    if torch is not None and isinstance(expected, torch.nn.Module):
        if type(yours) is not type(expected):
            return f"expected a {_type_name(expected)}, got {_type_name(yours)}"
        inner = _difference(dict(yours.state_dict()), dict(expected.state_dict()), atol, rtol,
                            labels)
        return f"the weights differ, {inner}" if inner else ""
    if torch is not None and isinstance(expected, torch.Tensor):
        if not isinstance(yours, torch.Tensor):
            return f"expected a torch.Tensor, got {_type_name(yours)}"
        if yours.shape != expected.shape:
            return f"shape {tuple(yours.shape)}, {theirs} {tuple(expected.shape)}"
        if yours.dtype != expected.dtype:
            return f"dtype {yours.dtype}, {theirs} {expected.dtype}"
        yours_cpu, expected_cpu = yours.detach().cpu(), expected.detach().cpu()
        if expected.is_floating_point() or expected.is_complex():
            # isclose counts equal infinities as close; equal_nan does the same for NaNs
            same = torch.isclose(yours_cpu, expected_cpu, rtol=rtol, atol=atol, equal_nan=True)
        else:
            same = yours_cpu == expected_cpu
        if bool(same.all()):
            return ""
        first = torch.nonzero(~same)[0]
        index = tuple(int(i) for i in first)
        count = int((~same).sum())
        more = count - 1
        others = f"; {more} more position{'s differ' if more > 1 else ' differs'}" if more else ""
        return (f"first difference at index {index}: {mine} {_scalar(yours_cpu[index])}, "
                f"{theirs} {_scalar(expected_cpu[index])}{others}")
    if isinstance(expected, float) or (
        isinstance(expected, int) and isinstance(yours, float) and not isinstance(expected, bool)
    ):
        if not isinstance(yours, (int, float)) or isinstance(yours, bool):
            return f"expected a number, got {_type_name(yours)}"
        if math.isnan(expected) and math.isnan(yours):
            return ""
        if math.isclose(yours, expected, rel_tol=rtol, abs_tol=atol):
            return ""
        return f"{mine} {yours!r}, {theirs} {expected!r}"
    if isinstance(expected, int) and not isinstance(expected, bool) and (
        not isinstance(yours, int) or isinstance(yours, bool)
    ):
        return f"expected a Python int, got {_type_name(yours)} {_show(yours)}"
    if isinstance(expected, (list, tuple)):
        if type(yours) is not type(expected) or len(yours) != len(expected):
            return f"expected a {_type_name(expected)} of length {len(expected)}"
        for index, (item, wanted) in enumerate(zip(yours, expected)):
            inner = _difference(item, wanted, atol, rtol, labels)
            if inner:
                return f"item {index}: {inner}"
        return ""
    if isinstance(expected, dict):
        if not isinstance(yours, dict) or set(yours) != set(expected):
            return f"expected a dict with keys {sorted(expected, key=str)}"
        for key in expected:
            inner = _difference(yours[key], expected[key], atol, rtol, labels)
            if inner:
                return f"key {key!r}: {inner}"
        return ""
    if isinstance(expected, (set, frozenset)) and isinstance(yours, (set, frozenset)):
        if yours == expected:
            return ""
        extra, missing = _sorted(yours - expected), _sorted(expected - yours)
        return f"{mine} holds {extra} that {theirs} lacks, and lacks {missing}"
    try:
        same = bool(yours == expected)
    except Exception:  # e.g. a tensor of several values compared with a number
        same = False
    return "" if same else "values differ"


def _scalar(value: Any) -> str:
    """One tensor element as a number: ``-inf``, ``0.5``, ``True``, ``3``."""
    item = value.item()
    return repr(item) if not isinstance(item, float) else f"{item:.6g}"


def _sorted(values: Any) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def _show(value: Any) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        text = repr(value)
        if value.numel() > 8:
            text = f"{text}  # shape {tuple(value.shape)}"
    elif torch is not None and isinstance(value, torch.nn.Module):  # not its many-line repr
        count = sum(parameter.numel() for parameter in value.parameters())
        text = f"<{_type_name(value)} with {count} parameters>"
    else:
        text = repr(value)
    text = " ".join(text.split())  # one line: tensors print over several
    if len(text) > MAX_SHOWN_CHARS:
        text = text[: MAX_SHOWN_CHARS - 5] + " ...)"
    return text


def _show_args(case: Case) -> str:
    return ", ".join(_show(arg) for arg in case.args)


def _raised(err: BaseException) -> str:
    return f"raises {_type_name(err)}: {err}"


def _type_name(value: Any) -> str:
    kind = value if isinstance(value, type) else type(value)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


# --------------------------------------------------------------------------------------------
# grade


class GradeError(Exception):
    """The notebook could not be graded at all (missing, not a notebook, kernel died)."""


@dataclass
class GradeReport:
    """Per-exercise results of one graded notebook, and the cells that raised while it ran."""

    notebook: Path
    results: list[CheckResult]
    cell_errors: list[str] = field(default_factory=list)

    @property
    def earned(self) -> int:
        return sum(result.earned for result in self.results)

    @property
    def possible(self) -> int:
        return sum(result.points for result in self.results)

    def table(self) -> str:
        rows = [("exercise", "name", "points", "result")]
        for result in self.results:
            verdict = result.status
            if result.status == "passed" and result.cases_run:
                total = result.cases_total or result.cases_run
                verdict += f" ({result.cases_passed}/{total} cases)"
            elif result.failed_case:
                verdict += f" (case {result.failed_case} of {result.cases_total})"
            points = f"{result.earned}/{result.points}"
            rows.append((result.exercise_id, result.name, points, verdict))
        rows.append(("total", "", f"{self.earned}/{self.possible}", ""))
        widths = [max(len(row[col]) for row in rows) for col in range(4)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        lines.insert(len(lines) - 1, lines[1])
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook": str(self.notebook),
            "earned": self.earned,
            "possible": self.possible,
            "results": [dataclasses.asdict(result) for result in self.results],
            "cell_errors": self.cell_errors,
        }


def chapter_of(notebook: Path) -> str:
    """``"03"`` for ``exercises/03_temperature.ipynb``."""
    match = NOTEBOOK_NAME.match(notebook.name)
    if not match:
        raise GradeError(
            f"cannot tell the chapter of {notebook.name}: expected a name like 03_topic.ipynb"
        )
    return match["chapter"]


def load_notebook(notebook: Path | str, *, chapter: str | None = None) -> tuple[Any, str]:
    """Read and validate ``notebook``; return it (nbformat 4) and its chapter ``"NN"``.

    Raises:
        GradeError: the file is missing, is not a notebook, or its chapter has no exercises.
    """
    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise GradeError(f"no such notebook: {path}")
    chapter = chapter or chapter_of(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise GradeError(f"{path} is not a Jupyter notebook (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise GradeError(f"{path} is not a Jupyter notebook (invalid JSON: {err})") from None
    if not isinstance(raw, dict) or "cells" not in raw:
        raise GradeError(f"{path} is not a Jupyter notebook (a JSON object without 'cells')")
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as err:
        summary = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GradeError(f"{path} is not a valid Jupyter notebook ({summary})") from None
    try:
        exercises_for_chapter(chapter)
    except ValueError as err:
        raise GradeError(str(err)) from None
    return nb, chapter


def grade_notebook(
    notebook: Path | str,
    *,
    timeout: int = 300,
    chapter: str | None = None,
    workdir: Path | str | None = None,
) -> GradeReport:
    """Execute ``notebook`` in a fresh kernel of this Python, then check each exercise.

    Cells that raise do not stop the run (a broken cell must not cost the other exercises); they
    are listed in ``cell_errors``, except ``NotImplementedError``, which only marks an unfinished
    stub. Each exercise is then checked against the function of the exercise's name left in the
    notebook's namespace, so the score does not depend on the notebook's own ``check`` calls;
    that function must be written in the notebook's cells and must not run the course's own
    answer, or the exercise scores 0 (status "imported" or "delegates", see :func:`_grade_one`).

    Args:
        notebook: path to an ``NN_name.ipynb`` file.
        timeout: seconds each cell may run (> 0) before the kernel is interrupted.
        chapter: ``"NN"``, when the file name does not start with it.
        workdir: the kernel's working folder; defaults to the notebook's own folder.

    Raises:
        GradeError: the file is missing, is not a notebook, or its kernel died.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    from nbclient.util import run_sync

    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    path = Path(notebook)
    nb, chapter = load_notebook(path, chapter=chapter)
    exercises = exercises_for_chapter(chapter)

    with tempfile.TemporaryDirectory(prefix="minidecode-grade-") as scratch:
        results_path = Path(scratch) / "results.json"
        student_cells = len(nb.cells)
        nb.cells.append(nbformat.v4.new_code_cell(
            "import minidecode.course.grading as _minidecode_grading\n"
            f"_minidecode_grading._grade_namespace({chapter!r}, globals(), {str(results_path)!r})\n"
        ))
        client = NotebookClient(
            nb,
            km=_current_env_kernel_manager(),
            timeout=timeout,
            allow_errors=True,
            interrupt_on_timeout=True,
            record_timing=False,
            resources={"metadata": {"path": str(Path(workdir or path.parent).resolve())}},
        )
        try:
            # The kernel's own stderr holds only start-up chatter; cell output arrives via iopub.
            client.execute(
                cleanup_kc=True,
                env=_kernel_environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except DeadKernelError as err:
            raise GradeError(f"the kernel died while running {path} ({err})") from None
        finally:
            if client.km is not None and client.km.has_kernel:
                run_sync(client.km.shutdown_kernel)(now=True)
        if not results_path.is_file():
            errors = [out for out in nb.cells[-1].get("outputs", []) if out.output_type == "error"]
            why = f"{errors[0].ename}: {errors[0].evalue}" if errors else "no results were written"
            raise GradeError(f"grading did not finish for {path} ({why})")
        recorded = json.loads(results_path.read_text(encoding="utf-8"))

    results = [CheckResult(**entry) for entry in recorded]
    cell_errors = []
    code_cells = [cell for cell in nb.cells[:student_cells] if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):
        # Code cells only, counted from the top, as a student counts them down the notebook (the
        # execution counts JupyterLab shows depend on the student's own session).
        which = f"(code cells counted from the top, markdown not counted; {_first_line(cell)})"
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error" or output["ename"] == "NotImplementedError":
                continue
            if output["ename"] == "KeyboardInterrupt":
                cell_errors.append(f"code cell {number} ran past the {timeout} s limit; "
                                   f"interrupted {which}")
            else:
                cell_errors.append(f"code cell {number} raised {output['ename']}: "
                                   f"{output['evalue']} {which}")
    known = {result.exercise_id for result in results}
    results += [
        CheckResult(ex.exercise_id, ex.name, "missing", detail="not run", points=ex.points)
        for ex in exercises.values()
        if ex.exercise_id not in known
    ]
    return GradeReport(path, results, cell_errors)


def _first_line(cell: Any) -> str:
    """``it starts "import torch"``: the first non-blank line of a cell, shortened."""
    lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > 40:
        text = text[:37] + "..."
    return f"it starts {json.dumps(text, ensure_ascii=False)}"


def _grade_namespace(
    chapter: str,
    namespace: dict[str, Any],
    results_path: str,
    cell_files: set[str] | None = None,
) -> None:
    """Run inside the graded kernel: check each exercise of ``chapter`` and write the results.

    ``cell_files`` are the code file names of the notebook's cells; by default, every cell this
    kernel has run except the grading cell that calls this function.
    """
    if cell_files is None:
        caller = inspect.currentframe().f_back  # the grading cell
        cell_files = _kernel_cell_files() - {caller.f_code.co_filename}
    results = []
    for ex in exercises_for_chapter(chapter).values():
        fn = namespace.get(ex.name)
        if fn is None:
            result = CheckResult(
                ex.exercise_id, ex.name, "missing",
                detail=f"the notebook defines no {ex.name}", points=ex.points,
            )
        else:
            result = _grade_one(ex, fn, cell_files)
        results.append(dataclasses.asdict(result))
    Path(results_path).write_text(json.dumps(results), encoding="utf-8")


def _grade_one(ex: Exercise, fn: Any, cell_files: set[str]) -> CheckResult:
    """Grade ``fn``, the notebook's answer to ``ex``; only the notebook's own work earns points.

    The rule, in two parts:

    1. ``fn`` must be written in the notebook: after following decorators (``__wrapped__``),
       ``functools.partial`` and bound methods to the innermost callable, that callable must be a
       Python function (a class: all its methods; an instance: its class's ``__call__``) whose
       code was compiled from one of ``cell_files``. An imported function, an alias
       ``fn = minidecode.x.fn``, a partial of one, a builtin, or code compiled by ``exec`` is
       status "imported".
    2. While the cases run, ``fn`` must never run the course's answer (:func:`_course_answers`):
       a lambda or ``def`` in a cell that returns ``minidecode.sampling.min_p_filter(...)``, or
       a function given the answer's code, is status "delegates". Calling other package helpers,
       torch, or the notebook's own functions is fine.
    """
    not_written_here = _not_written_in_notebook(ex.name, fn, cell_files)
    if not_written_here:
        return CheckResult(ex.exercise_id, ex.name, "imported", detail=not_written_here,
                           points=ex.points)
    answers = _course_answers(ex)
    ran_answer: list[str] = []

    def watch(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call" and not ran_answer and frame.f_code in answers:
            ran_answer.append(answers[frame.f_code])

    @functools.wraps(fn)  # keeps the name and, through __wrapped__, the signature
    def watched(*args: Any, **kwargs: Any) -> Any:
        previous = sys.getprofile()
        sys.setprofile(watch)
        try:
            return fn(*args, **kwargs)
        finally:
            sys.setprofile(previous)

    if not isinstance(getattr(fn, "__name__", None), str):  # a partial has no name of its own
        watched.__name__ = ex.name

    with redirect_stdout(io.StringIO()):  # students' debug prints are not grading output
        result = run_check(ex, watched)
    if ran_answer:
        result.status = "delegates"
        result.detail = (f"{ex.name} runs {ran_answer[0]}, the course's own answer, rather than "
                         "computing the result in the notebook: 0 points")
    return result


def _not_written_in_notebook(name: str, fn: Any, cell_files: set[str]) -> str:
    """Empty when ``fn`` is the notebook's own function (part 1 of :func:`_grade_one`'s rule);
    otherwise why it earns nothing, in one line."""
    innermost, seen, decorated = fn, set(), False
    while id(innermost) not in seen:  # decorators, partials and bound methods, down to the code
        seen.add(id(innermost))
        if isinstance(innermost, functools.partial):
            innermost = innermost.func
        elif isinstance(innermost, types.MethodType):
            innermost = innermost.__func__
        else:
            try:
                wrapped = getattr(innermost, "__wrapped__", None)
            except Exception:  # an object whose __getattr__ raises: nothing to follow
                wrapped = None
            if wrapped is None:
                break
            innermost, decorated = wrapped, True
    if not isinstance(innermost, (type, types.FunctionType)):
        call = inspect.getattr_static(type(innermost), "__call__", None)
        if isinstance(call, types.FunctionType):  # an instance: its class's __call__ holds the code
            innermost = call
    if isinstance(innermost, type):
        codes = [
            method.__code__
            for value in vars(innermost).values()
            for method in [getattr(value, "__func__", value)]
            if isinstance(method, types.FunctionType)
        ]
    elif isinstance(innermost, types.FunctionType):
        codes = [innermost.__code__]
    else:
        return f"{name} is {_describe(fn)}, not a function written in the notebook: 0 points"
    if codes and all(code.co_filename in cell_files for code in codes):
        return ""
    module = getattr(innermost, "__module__", None)
    if module not in (None, "__main__"):
        verb = "wraps" if decorated else "is"
        return (f"{name} {verb} {_describe(innermost if decorated else fn)}, imported rather than "
                "written in the notebook: 0 points")
    where = codes[0].co_filename if codes else "nowhere"
    return (f"{name} is {_describe(fn)}, compiled from {where} rather than written in a cell of "
            "the notebook: 0 points")


def _describe(obj: Any) -> str:
    """``minidecode.sampling.min_p_filter``, ``functools.partial(...)``, or ``a T object``."""
    if isinstance(obj, functools.partial):
        return f"functools.partial({_describe(obj.func)})"
    try:
        qualname = getattr(obj, "__qualname__", None)
        module = getattr(obj, "__module__", None)
    except Exception:
        qualname = module = None
    if isinstance(qualname, str):
        return qualname if module in (None, "__main__") else f"{module}.{qualname}"
    return f"a {_type_name(obj)} object"


_ANSWERS: dict[str, dict[types.CodeType, str]] = {}


def _course_answers(ex: Exercise) -> dict[types.CodeType, str]:
    """The code objects whose running means the course's answer computed the result, each with
    its dotted name: the reference, the exercise's ``answers`` (every method of a class), and, when
    the reference is a thin wrapper in ``minidecode.course.checks``, the minidecode functions it
    calls directly (found by running it on the seeded cases). Code objects compare by content, not
    file name, so a copy of the answer's code counts as the answer."""
    if ex.exercise_id in _ANSWERS:
        return _ANSWERS[ex.exercise_id]
    reference = inspect.unwrap(ex.reference)
    answers: dict[types.CodeType, str] = {}
    code = getattr(reference, "__code__", None)
    if code is not None:
        answers[code] = _describe(reference)
    for answer in ex.answers:
        answers.update(_answer_codes(answer))
    if code is not None and reference.__module__.startswith("minidecode.course.checks."):

        def find_callees(frame: types.FrameType, event: str, arg: Any) -> None:
            if event != "call" or frame.f_back is None or frame.f_back.f_code is not code:
                return
            module = frame.f_globals.get("__name__", "")
            if module.startswith("minidecode.") and not module.startswith("minidecode.course."):
                qualname = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
                answers.setdefault(frame.f_code, f"{module}.{qualname}")

        previous = sys.getprofile()
        sys.setprofile(find_callees)
        try:
            for case in ex.seeded_cases():
                _call(reference, case)
        finally:
            sys.setprofile(previous)
    _ANSWERS[ex.exercise_id] = answers
    return answers


def _answer_codes(answer: Any) -> dict[types.CodeType, str]:
    """The code objects of a function (unwrapped), or of every method a class defines in its own
    module's source (not those a decorator generates, such as a dataclass's ``__repr__``), by
    name."""
    answer = inspect.unwrap(answer)
    if isinstance(answer, type):
        source = getattr(sys.modules.get(answer.__module__), "__file__", None)
        methods = [getattr(value, "__func__", value) for value in vars(answer).values()]
        return {method.__code__: f"{answer.__module__}.{method.__qualname__}"
                for method in methods if isinstance(method, types.FunctionType)
                and method.__code__.co_filename == source}
    code = getattr(answer, "__code__", None)
    return {code: _describe(answer)} if code is not None else {}


def _kernel_cell_files() -> set[str]:
    """The code file names of every cell this IPython kernel has run (ipykernel names them
    ``/tmp/ipykernel_PID/HASH.py``); empty outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return set()
    shell = get_ipython()
    if shell is None:
        return set()
    filename_map = getattr(getattr(shell, "compile", None), "_filename_map", None)
    if isinstance(filename_map, dict):
        return set(filename_map)
    # Older IPython: cells are the linecache entries IPython pins with mtime None.
    return {
        name for name, entry in list(linecache.cache.items())
        if len(entry) == 4 and entry[1] is None
    }


def _kernel_environment() -> dict[str, str]:
    """This process's environment; from a source checkout, with the checkout on PYTHONPATH so the
    kernel grades with the very minidecode that runs the grader."""
    env = dict(os.environ)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), env.get("PYTHONPATH")]))
    return env


def _current_env_kernel_manager() -> Any:
    """A kernel manager whose kernel is this very Python, whatever kernelspecs are installed."""
    import ipykernel.kernelspec
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    class CurrentEnvKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> Any:
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES,
                **ipykernel.kernelspec.get_kernel_dict(),
            )

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvKernelSpecs())
