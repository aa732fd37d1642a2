"""The grading is real: solutions score full marks, fresh exercises score zero on every exercise,
answers imported from the package (or wrapping its answer) score zero, exercises/ is exactly what
the generator writes, and bad input gets one clear line.

Everything here is generic over solutions/*.ipynb, so a new chapter is covered by adding its
solution notebook, its generated exercise notebook and minidecode/course/checks/chNN.py.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minidecode import sampling
from minidecode.course.exercises import (
    MarkerError,
    build,
    exercise_notebook,
    exercise_source,
    render_notebook,
)
from minidecode.course.grading import (
    Exercise,
    _grade_one,
    chapter_of,
    check,
    exercises_for_chapter,
    get_exercise,
    grade_notebook,
    run_check,
)
from minidecode.course.tour import softmax_with_temperature

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
SOLUTION_IDS = [path.stem for path in SOLUTIONS]


def _grade_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "minidecode", "grade", *args],
        cwd=cwd, capture_output=True, text=True, timeout=600, env=env,
    )


def _write_notebook(path: Path, *sources: str) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[new_code_cell(source) for source in sources])
    nbformat.write(notebook, path)
    return path


# --------------------------------------------------------------------------- the generator


def test_there_is_at_least_one_solution_notebook() -> None:
    assert SOLUTIONS, "solutions/ holds no notebook"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=SOLUTION_IDS)
def test_exercises_are_byte_identical_to_the_generator_output(solution: Path) -> None:
    solution_json = json.loads(solution.read_text(encoding="utf-8"))
    generated = render_notebook(
        exercise_notebook(solution_json, generated_from=f"solutions/{solution.name}")
    )
    committed = REPO / "exercises" / solution.name
    assert committed.is_file(), (
        f"run `python -m minidecode.course.exercises build` to write {committed}"
    )
    assert committed.read_bytes() == generated.encode("utf-8"), (
        f"{committed} is stale: run `python -m minidecode.course.exercises build`"
    )


def test_exercises_folder_holds_exactly_the_generated_notebooks() -> None:
    assert build(REPO / "solutions", REPO / "exercises", check_only=True) == []
    result = subprocess.run(
        [sys.executable, "-m", "minidecode.course.exercises", "build", "--check"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_build_writes_then_check_finds_nothing(tmp_path: Path) -> None:
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    for solution in SOLUTIONS:
        (solutions / solution.name).write_bytes(solution.read_bytes())
    (exercises).mkdir()
    (exercises / "99_stale.ipynb").write_text("{}", encoding="utf-8")
    assert build(solutions, exercises, check_only=True)  # missing and stale files are reported
    build(solutions, exercises)
    assert not (exercises / "99_stale.ipynb").exists()
    assert build(solutions, exercises, check_only=True) == []
    for solution in SOLUTIONS:
        committed = REPO / "exercises" / solution.name
        assert (exercises / solution.name).read_bytes() == committed.read_bytes()


def test_solution_region_becomes_a_stub_at_the_marker_indentation() -> None:
    source = (
        "def f(x):\n"
        "    \"\"\"Doc.\"\"\"\n"
        "    ### BEGIN SOLUTION\n"
        "    return x + 1\n"
        "    ### END SOLUTION\n"
        "\n"
        "y = 2"
    )
    assert exercise_source(source) == (
        "def f(x):\n"
        "    \"\"\"Doc.\"\"\"\n"
        "    # YOUR CODE HERE\n"
        "    raise NotImplementedError()\n"
        "\n"
        "y = 2"
    )


def test_a_given_region_replaces_the_stub_with_the_buggy_code_uncommented() -> None:
    source = (
        "def f(x):\n"
        "    ### BEGIN SOLUTION\n"
        "    ### BEGIN GIVEN\n"
        "    # y = x  # the bug\n"
        "    #\n"
        "    # return y\n"
        "    ### END GIVEN\n"
        "    return x + 1\n"
        "    ### END SOLUTION\n"
        "\n"
        "z = 2"
    )
    assert exercise_source(source) == (
        "def f(x):\n"
        "    y = x  # the bug\n"
        "\n"
        "    return y\n"
        "\n"
        "z = 2"
    )
    namespace: dict = {}
    exec(source, namespace)  # the solution runs the fix only: the given lines are comments
    assert namespace["f"](1) == 2


def test_nbgrader_keeps_the_given_code_before_the_solution_region() -> None:
    from minidecode.course.nbgrader import given_before_solution

    source = ("def f(x):\n    ### BEGIN SOLUTION\n    ### BEGIN GIVEN\n    # return x\n"
              "    ### END GIVEN\n    return x + 1\n    ### END SOLUTION\n")
    moved = given_before_solution(source)
    assert moved.index("    # return x\n") < moved.index("### BEGIN SOLUTION")
    assert "BEGIN GIVEN" not in moved and "uncomment" in moved
    namespace: dict = {}
    exec(moved, namespace)
    assert namespace["f"](1) == 2
    assert given_before_solution("x = 1\n") == "x = 1\n"


def test_hidden_tests_are_dropped_and_markdown_answers_stubbed() -> None:
    source = "check('00.1', f)\n### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS\n"
    assert exercise_source(source) == "check('00.1', f)\n"
    answer = "Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION\n"
    assert exercise_source(answer, cell_type="markdown") == "Why?\nYOUR ANSWER HERE\n"


@pytest.mark.parametrize(
    "source",
    [
        "### BEGIN SOLUTION\nx = 1\n",
        "x = 1\n### END SOLUTION\n",
        "### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS\n### END SOLUTION\n",
        "### BEGIN HIDDEN TESTS\nx = 1\n### END SOLUTION\n",
        "### BEGIN GIVEN\n# x = 1\n### END GIVEN\n",
        "### BEGIN SOLUTION\n### BEGIN GIVEN\n# x = 1\n### END SOLUTION\n",
        "### BEGIN SOLUTION\n### BEGIN GIVEN\nx = 1\n### END GIVEN\n### END SOLUTION\n",
        "### BEGIN SOLUTION\n### END GIVEN\n### END SOLUTION\n",
        ("### BEGIN SOLUTION\n### BEGIN GIVEN\n### END GIVEN\n### BEGIN GIVEN\n"
         "### END GIVEN\n### END SOLUTION\n"),
    ],
)
def test_unbalanced_markers_are_an_error(source: str) -> None:
    with pytest.raises(MarkerError):
        exercise_source(source)


def test_exercise_notebook_strips_outputs_and_keeps_cell_ids() -> None:
    solution = {
        "cells": [
            {"cell_type": "code", "execution_count": 3, "id": "keep-me",
             "metadata": {"execution": {"iopub.status.busy": "2024"}, "tags": ["t"]},
             "outputs": [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}],
             "source": ["def f():\n", "    ### BEGIN SOLUTION\n", "    return 1\n",
                        "    ### END SOLUTION\n"]},
            {"cell_type": "code", "execution_count": 4, "id": "hidden-only", "metadata": {},
             "outputs": [],
             "source": "### BEGIN HIDDEN TESTS\nassert f() == 1\n### END HIDDEN TESTS"},
        ],
        "metadata": {"widgets": {"state": {}}, "kernelspec": {"name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    exercise = exercise_notebook(solution)
    assert [cell["id"] for cell in exercise["cells"]] == ["keep-me"]
    cell = exercise["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None
    assert cell["metadata"] == {"tags": ["t"]}
    assert "widgets" not in exercise["metadata"]
    assert render_notebook(exercise) == render_notebook(exercise_notebook(solution))


# --------------------------------------------------------------------------- check()


def test_check_passes_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert check("00.1", softmax_with_temperature) is True
    out = capsys.readouterr().out
    assert out.startswith("✓ 00.1 softmax_with_temperature: ") and "cases passed" in out


def test_check_says_not_implemented_for_a_stub(capsys: pytest.CaptureFixture[str]) -> None:
    def softmax_with_temperature(logits, temperature):
        raise NotImplementedError()

    assert check("00.1", softmax_with_temperature) is False
    assert "not implemented yet" in capsys.readouterr().out


def test_check_prints_the_first_failing_case_as_yours_vs_expected(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def forgot_the_temperature(logits, temperature):
        return torch.softmax(logits, dim=-1)

    assert check("00.1", forgot_the_temperature) is False
    out = capsys.readouterr().out
    assert "failed case 2 of " in out
    for label in ("input:", "yours:", "expected:"):
        assert label in out


def test_a_failed_short_answer_does_not_show_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    """A short answer is a function of no arguments: its failure report hides the expected
    value, or the first wrong guess would give the answer away."""
    from minidecode.course.checks.ch01 import answer_01_4

    right = answer_01_4()

    def wrong_guess():
        return right + 1

    assert check("01.4", wrong_guess) is False
    out = capsys.readouterr().out
    assert "expected: (not shown" in out and f"expected: {right}" not in out


def test_check_catches_a_failure_only_random_cases_find(capsys: pytest.CaptureFixture[str]) -> None:
    def wrong_beyond_eight_logits(logits, temperature):  # no seeded case has more than 8
        probs = softmax_with_temperature(logits, temperature)
        return probs + 0.01 if logits.shape[-1] > 8 else probs

    assert check("00.1", wrong_beyond_eight_logits) is False
    assert "random case" in capsys.readouterr().out


def test_check_rejects_a_wrong_signature(capsys: pytest.CaptureFixture[str]) -> None:
    assert check("00.1", lambda logits: logits) is False
    out = capsys.readouterr().out
    assert "expected a function softmax_with_temperature(logits, temperature)" in out
    assert "2 positional arguments" in out


def test_check_rejects_a_non_function(capsys: pytest.CaptureFixture[str]) -> None:
    assert check("00.1", 42) is False
    assert "expected a function softmax_with_temperature(logits, temperature), got int" in (
        capsys.readouterr().out
    )


def test_check_rejects_a_wrong_return_type(capsys: pytest.CaptureFixture[str]) -> None:
    def as_list(logits, temperature):
        return softmax_with_temperature(logits, temperature).tolist()

    assert check("00.1", as_list) is False
    out = capsys.readouterr().out
    assert "expected the return value to be a torch.Tensor, got list" in out


def test_check_names_the_known_exercises_for_an_unknown_id() -> None:
    with pytest.raises(ValueError, match="00.1"):
        check("00.99", softmax_with_temperature)
    with pytest.raises(ValueError, match="look like"):
        check("zero", softmax_with_temperature)


def test_check_is_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    check("00.1", softmax_with_temperature)
    first = capsys.readouterr().out
    check("00.1", softmax_with_temperature)
    assert capsys.readouterr().out == first


# --------------------------------------------------------------------------- grading proofs


def _functions_with_given_code(solution: dict) -> set[str]:
    """The names of the functions defined in code cells holding a ``### BEGIN GIVEN`` region."""
    import re

    names: set[str] = set()
    for cell in solution["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and "### BEGIN GIVEN" in source:
            names.update(re.findall(r"^def (\w+)\(", source, flags=re.MULTILINE))
    return names


@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=SOLUTION_IDS)
def test_every_solution_notebook_scores_full_marks(solution: Path) -> None:
    report = grade_notebook(solution)
    registered = set(exercises_for_chapter(chapter_of(solution)))
    assert {result.exercise_id for result in report.results} == registered
    failing = [f"{r.exercise_id}: {r.status} {r.detail}" for r in report.results if not r.passed]
    assert failing == [], "\n".join(failing)
    assert report.earned == report.possible > 0
    assert report.cell_errors == []


@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=SOLUTION_IDS)
def test_every_fresh_exercise_notebook_scores_zero_on_each_exercise(
    solution: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / solution.name
    fresh.write_text(
        render_notebook(exercise_notebook(json.loads(solution.read_text(encoding="utf-8")))),
        encoding="utf-8",
    )
    report = grade_notebook(fresh, workdir=REPO / "exercises")
    assert report.results, "no exercise was graded"
    given = _functions_with_given_code(json.loads(solution.read_text(encoding="utf-8")))
    for result in report.results:
        assert not result.passed, f"{result.exercise_id} passes on the stub: its check is too weak"
        # a find-the-bug exercise starts from the given buggy code, which its check must fail
        expected = "failed" if result.name in given else "not implemented"
        assert result.status == expected, f"{result.exercise_id}: {result.detail}"
    assert report.earned == 0


@pytest.mark.slow
def test_grade_cli_prints_a_score_table() -> None:
    result = _grade_cli("exercises/00_tour.ipynb")
    assert result.returncode == 0, result.stderr
    assert "00.1" in result.stdout and "softmax_with_temperature" in result.stdout
    assert "total" in result.stdout and "0/1" in result.stdout


# --------------------------------------------------------------------------- bad input


def _assert_one_clean_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grade: ") and expected in lines[0], lines[0]


def test_grade_missing_file(tmp_path: Path) -> None:
    _assert_one_clean_line(_grade_cli(str(tmp_path / "00_missing.ipynb")), "no such notebook")


def test_grade_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "00_broken.ipynb"
    path.write_text("this is not { json", encoding="utf-8")
    _assert_one_clean_line(_grade_cli(str(path)), "invalid JSON")


def test_grade_json_that_is_not_a_notebook(tmp_path: Path) -> None:
    path = tmp_path / "00_list.ipynb"
    path.write_text("[1, 2, 3]", encoding="utf-8")
    _assert_one_clean_line(_grade_cli(str(path)), "not a Jupyter notebook")


def test_grade_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "00_binary.ipynb"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    _assert_one_clean_line(_grade_cli(str(path)), "not a Jupyter notebook")


def test_grade_name_without_chapter(tmp_path: Path) -> None:
    path = _write_notebook(tmp_path / "homework.ipynb", "x = 1")
    _assert_one_clean_line(_grade_cli(str(path)), "cannot tell the chapter")


def test_grade_chapter_without_exercises(tmp_path: Path) -> None:
    path = _write_notebook(tmp_path / "98_nothing.ipynb", "x = 1")
    _assert_one_clean_line(_grade_cli(str(path)), "no graded exercises")


@pytest.mark.slow
def test_grade_notebook_whose_code_raises(tmp_path: Path) -> None:
    path = _write_notebook(
        tmp_path / "00_raises.ipynb",
        "import torch\n1 / 0",
        "def softmax_with_temperature(logits, temperature):\n"
        "    return torch.softmax(logits / temperature, dim=-1)",
    )
    result = _grade_cli(str(path))
    _assert_one_clean_line(result, "cell 1 raised ZeroDivisionError")
    assert "00.1" in result.stdout  # the rest was still graded


@pytest.mark.slow
def test_grade_notebook_whose_kernel_dies(tmp_path: Path) -> None:
    path = _write_notebook(tmp_path / "00_crash.ipynb", "import os\nos._exit(1)")
    _assert_one_clean_line(_grade_cli(str(path)), "kernel died")


def test_every_exercise_is_declared_properly() -> None:
    for solution in SOLUTIONS:
        for exercise_id, exercise in exercises_for_chapter(chapter_of(solution)).items():
            assert get_exercise(exercise_id) is exercise
            assert list(exercise.seeded_cases()), f"{exercise_id} has no seeded case"


# --------------------------------------------------------------------------- chapters 01-03


def _keep_only_argmax(logits, *_):
    return logits.masked_fill(logits < logits.amax(dim=-1, keepdim=True), float("-inf"))


def _min_p_absolute(logits, min_p):  # compares p_i with min_p, forgetting to scale by p_max
    return logits.masked_fill(torch.softmax(logits, -1) < min_p, float("-inf"))


def _top_p_splitting_ties(logits, top_p):  # transformers' rule: ties at the boundary split
    from transformers import TopPLogitsWarper

    if not 0 < top_p <= 1:
        raise ValueError("top_p")
    return TopPLogitsWarper(top_p)(None, logits.reshape(-1, logits.shape[-1])).reshape(logits.shape)


def _naive_entropy(logits):  # -sum p log(p + 1e-10): nan in float16, and the dtype of the input
    probs = torch.softmax(logits, -1)
    entropy = -(probs * torch.log(probs + 1e-10)).sum(-1)
    return entropy, (probs * (torch.log(probs + 1e-10) + entropy[..., None]) ** 2).sum(-1)


def _adaptive_by_top_p(logits, epsilon):  # a top-p count in disguise
    if not 0 < epsilon < 1:
        raise ValueError("epsilon")
    return (torch.softmax(logits, -1).sort(-1, descending=True).values.cumsum(-1) < 0.9).sum(-1) + 1


def _edt_inverted(entropy, t0, n, theta):  # n^(H / theta) instead of n^(theta / H)
    if not (t0 > 0 and 0 < n < 1 and theta > 0):
        raise ValueError("bad")
    return t0 * n ** (entropy / theta)


def _dynamic_linear(entropy, n_candidates, low, high, exponent):  # ignores the exponent
    if not (0 <= low <= high and exponent > 0):
        raise ValueError("bad")
    fraction = torch.where(n_candidates > 1, entropy / torch.log(n_candidates.float()), 0.0)
    return low + (high - low) * fraction.clamp(0, 1)


@pytest.mark.parametrize(
    "exercise_id, wrong",
    [
        ("01.1", _keep_only_argmax), ("01.1", _min_p_absolute),
        ("01.2", _keep_only_argmax), ("01.2", _top_p_splitting_ties),
        ("02.1", _naive_entropy),
        ("02.2", lambda logits, epsilon: torch.ones(logits.shape[:-1], dtype=torch.long)),
        ("02.2", _adaptive_by_top_p),
        ("03.1", lambda entropy, t0, n, theta: torch.zeros_like(entropy)), ("03.1", _edt_inverted),
        ("03.2", _dynamic_linear),
    ],
)
def test_chapter_01_to_03_checks_reject_plausible_mistakes(exercise_id, wrong, capsys):
    """Greedy stand-ins (argmax only, one candidate, temperature 0) and common slips all fail."""
    assert check(exercise_id, wrong) is False
    assert "failed" in capsys.readouterr().out


# --------------------------------------------------------------------------- chapter 07


def _resample_from_p(p, q, draft_token, uniform):  # the classic mistake: p instead of residual
    if uniform < min(1.0, float(p[draft_token] / q[draft_token])):
        return torch.nn.functional.one_hot(torch.tensor(draft_token), p.shape[-1]).to(p.dtype)
    return p


def _count_all_matches(draft_tokens, target_tokens):  # forgets to stop at the first mismatch
    return sum(int(a) == int(b) for a, b in zip(list(draft_tokens), list(target_tokens)))


def _earliest_match(tokens, max_ngram, num_tokens):  # the first occurrence, not the latest
    tokens = list(tokens)
    for n in range(min(max_ngram, len(tokens) - 1), 0, -1):
        for start in range(len(tokens) - n):
            if tokens[start:start + n] == tokens[len(tokens) - n:]:
                return tokens[start + n:start + n + num_tokens]
    return []


@pytest.mark.parametrize(
    ("exercise_id", "name", "wrong"),
    [
        ("07.1", "verify_position", _resample_from_p),
        ("07.2", "accepted_prefix_length", _count_all_matches),
        ("07.3", "find_candidate_tokens", _earliest_match),
    ],
)
def test_chapter_07_checks_fail_on_the_stub_and_on_a_typical_mistake(exercise_id, name, wrong,
                                                                     check_rejects):
    check_rejects(exercise_id, name, wrong)


# --------------------------------------------------------------------------- own work only
#
# A notebook earns points only for functions written in its cells: an imported function, an alias,
# a partial, or a cell function that runs the course's own answer scores 0, saying why.

CELL = "/tmp/ipykernel_4242/1234567.py"  # what ipykernel names a cell's code
MIN_P_SOLUTION = """
def min_p_filter(logits, min_p):
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    probs = torch.softmax(logits, dim=-1)
    top = probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < min_p * top, float("-inf"))
"""


def _cell_function(source: str, name: str, filename: str = CELL):
    """``name`` as defined by running ``source`` as a notebook cell compiled as ``filename``."""
    namespace = {"__name__": "__main__", "torch": torch, "sampling": sampling,
                 "functools": functools}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def _package_function(exercise: Exercise):
    """The package's own function for ``exercise``: its reference, or, when the reference is a
    thin wrapper in minidecode.course.checks, the minidecode function of that name it calls (an
    exercise with no package function of its name, such as a whole decode loop or a short
    answer, is answered by importing the reference itself)."""
    reference = exercise.reference
    if not reference.__module__.startswith("minidecode.course.checks."):
        return reference
    found = set()
    for global_name in reference.__code__.co_names:
        module = reference.__globals__.get(global_name)
        candidate = getattr(module, reference.__name__, None)
        if getattr(module, "__name__", "").startswith("minidecode.") and callable(candidate):
            found.add(candidate)
    assert len(found) <= 1, f"{exercise.exercise_id}: which function does it wrap? {found}"
    return found.pop() if found else reference


def test_a_function_written_in_a_cell_earns_its_points() -> None:
    exercise = get_exercise("01.1")
    result = _grade_one(exercise, _cell_function(MIN_P_SOLUTION, "min_p_filter"), {CELL})
    assert (result.status, result.earned) == ("passed", 1), result.detail


def test_a_cell_function_may_be_decorated_and_call_other_package_helpers() -> None:
    source = MIN_P_SOLUTION.replace("torch.softmax(logits, dim=-1)",
                                    "softmax_with_temperature(logits, 1.0)")  # a chapter 00 helper
    source = ("from minidecode.course.tour import softmax_with_temperature\n"
              "@torch.no_grad()\n" + source.lstrip())
    fn = _cell_function(source, "min_p_filter")
    assert fn.__code__.co_filename != CELL  # the decorator's wrapper is torch's, not the cell's
    result = _grade_one(get_exercise("01.1"), fn, {CELL})
    assert (result.status, result.earned) == ("passed", 1), result.detail


def test_a_callable_object_of_a_class_written_in_a_cell_earns_its_points() -> None:
    source = "class MinP:\n    def __call__(self, logits, min_p):\n" + "\n".join(
        "    " + line for line in MIN_P_SOLUTION.splitlines()[2:]
    ) + "\nmin_p_filter = MinP()\n"
    result = _grade_one(get_exercise("01.1"), _cell_function(source, "min_p_filter"), {CELL})
    assert (result.status, result.earned) == ("passed", 1), result.detail


def test_a_cell_function_is_only_the_notebooks_own_in_the_notebook_being_graded() -> None:
    fn = _cell_function(MIN_P_SOLUTION, "min_p_filter", filename="/tmp/ipykernel_1/other.py")
    result = _grade_one(get_exercise("01.1"), fn, {CELL})
    assert (result.status, result.earned) == ("imported", 0)
    assert "compiled from /tmp/ipykernel_1/other.py rather than written in a cell" in result.detail


@pytest.mark.parametrize(
    ("make", "described"),
    [
        (lambda: sampling.min_p_filter, "min_p_filter is minidecode.sampling.min_p_filter"),
        (lambda: get_exercise("01.1").reference,
         "min_p_filter is minidecode.course.checks.ch01.min_p_filter"),
        (lambda: functools.partial(sampling.min_p_filter),
         "min_p_filter is functools.partial(minidecode.sampling.min_p_filter)"),
        (lambda: torch.no_grad()(sampling.min_p_filter),
         "min_p_filter wraps minidecode.sampling.min_p_filter"),
        (lambda: _cell_function("import functools\n"
                                "@functools.wraps(sampling.min_p_filter)\n"
                                "def min_p_filter(*args):\n"
                                "    return sampling.min_p_filter(*args)\n", "min_p_filter"),
         "min_p_filter wraps minidecode.sampling.min_p_filter"),
    ],
    ids=["import", "checks-reference", "partial", "decorated-import", "functools-wraps"],
)
def test_an_imported_function_earns_nothing_and_says_why(make, described) -> None:
    result = _grade_one(get_exercise("01.1"), make(), {CELL})
    assert (result.status, result.earned, result.cases_run) == ("imported", 0, 0)
    assert result.detail == f"{described}, imported rather than written in the notebook: 0 points"
    assert result.detail in result.report()


def test_code_compiled_outside_the_cells_earns_nothing() -> None:
    fn = _cell_function(MIN_P_SOLUTION, "min_p_filter", filename="<string>")  # exec in a cell
    result = _grade_one(get_exercise("01.1"), fn, {CELL})
    assert (result.status, result.earned) == ("imported", 0)
    assert result.detail == ("min_p_filter is min_p_filter, compiled from <string> rather than "
                             "written in a cell of the notebook: 0 points")
    builtin = _grade_one(get_exercise("00.1"), torch.softmax, {CELL})
    assert (builtin.status, builtin.earned) == ("imported", 0)
    assert "not a function written in the notebook: 0 points" in builtin.detail


@pytest.mark.parametrize(
    ("exercise_id", "source", "answer"),
    [
        ("01.1", "min_p_filter = lambda logits, min_p: sampling.min_p_filter(logits, min_p)",
         "minidecode.sampling.min_p_filter"),
        ("01.1", "def min_p_filter(logits, min_p):\n"
                 "    from minidecode.course.checks.ch01 import min_p_filter as answer\n"
                 "    return answer(logits, min_p)",
         "minidecode.course.checks.ch01.min_p_filter"),
        ("01.2", "def top_p_filter(logits, top_p):\n"
                 "    return _helper(logits, top_p)\n"
                 "def _helper(logits, top_p):\n"
                 "    return sampling.top_p_filter(logits, top_p)",
         "minidecode.sampling.top_p_filter"),
        ("01.1", "min_p_filter = lambda: None\n"  # the answer's code, relabelled as the cell's
                 f"min_p_filter.__code__ = sampling.min_p_filter.__code__.replace("
                 f"co_filename={CELL!r})",
         "minidecode.sampling.min_p_filter"),
        ("09.1", "import minidecode.cache_policies.cap_nuc as policy\n"
                 "def novelty_scores(logits, input_ids):\n"
                 "    return policy.novelty_scores(logits, input_ids)",
         "minidecode.cache_policies.cap_nuc.novelty_scores"),
    ],
    ids=["lambda", "def-calls-checks-reference", "via-helper", "copied-code", "chapter-09"],
)
def test_a_cell_function_that_runs_the_answer_earns_nothing(exercise_id, source, answer) -> None:
    exercise = get_exercise(exercise_id)
    fn = _cell_function(source, exercise.name)
    assert fn.__code__.co_filename == CELL
    result = _grade_one(exercise, fn, {CELL})
    assert (result.status, result.earned) == ("delegates", 0), result.detail
    assert result.detail == (f"{exercise.name} runs {answer}, the course's own answer, rather than "
                             "computing the result in the notebook: 0 points")


def _replace_stubs(notebook: Path, sources: dict[str, str], path: Path,
                   given: set[str] = frozenset()) -> Path:
    """A copy of exercise ``notebook`` at ``path`` whose stub cell defining each name in
    ``sources`` holds ``sources[name]`` instead; for a name in ``given`` (a find-the-bug
    exercise), the cell of its given code."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    replaced = set()
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        is_stub = cell["cell_type"] == "code" and "NotImplementedError" in text
        for name, source in sources.items():
            if cell["cell_type"] == "code" and (is_stub or name in given) and \
                    f"def {name}(" in text:
                cell["source"] = source
                replaced.add(name)
    assert replaced == set(sources), f"no stub cell for {set(sources) - replaced} in {notebook}"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=SOLUTION_IDS)
def test_every_exercise_answered_by_importing_the_package_function_scores_zero(
    solution: Path, tmp_path: Path
) -> None:
    exercises = exercises_for_chapter(chapter_of(solution))
    imported = {ex.name: _package_function(ex) for ex in exercises.values()}
    for exercise in exercises.values():  # so without the own-work rule, the cheat would pass
        assert run_check(exercise, imported[exercise.name]).passed, exercise.exercise_id
    variant = _replace_stubs(
        REPO / "exercises" / solution.name,
        {name: f"from {fn.__module__} import {fn.__name__} as {name}"
         for name, fn in imported.items()},
        tmp_path / solution.name,
        given=_functions_with_given_code(json.loads(solution.read_text(encoding="utf-8"))),
    )
    report = grade_notebook(variant, workdir=REPO / "exercises")
    assert report.cell_errors == []  # the imports worked, and the notebook ran with them
    assert [result.exercise_id for result in report.results] == list(exercises)
    for result in report.results:
        fn = imported[result.name]
        assert (result.status, result.earned) == ("imported", 0), result.detail
        assert result.detail == (f"{result.name} is {fn.__module__}.{fn.__qualname__}, imported "
                                 "rather than written in the notebook: 0 points")
    assert report.earned == 0


@pytest.mark.slow
def test_aliases_partials_and_lambdas_of_the_answer_score_zero_in_a_kernel(
    tmp_path: Path,
) -> None:
    solution_cells = json.loads((REPO / "solutions" / "09_infinipot.ipynb").read_text("utf-8"))
    own_work = next("".join(cell["source"]) for cell in solution_cells["cells"]
                    if "def context_reset_positions(" in "".join(cell["source"]))
    variant = _replace_stubs(REPO / "exercises" / "09_infinipot.ipynb", {
        "novelty_scores": "import minidecode.cache_policies.cap_nuc as policy\n"
                          "novelty_scores = policy.novelty_scores",
        "catalyst_scores": "import functools\n"
                           "catalyst_scores = functools.partial(policy.catalyst_scores)",
        "infinipot_keep": "infinipot_keep = lambda nuc, cap, keep, alpha: "
                          "policy.infinipot_keep(nuc, cap, keep, alpha)",
        "context_reset_positions": "@torch.no_grad()\n" + own_work,
    }, tmp_path / "09_disguised.ipynb")
    report = grade_notebook(variant, workdir=REPO / "exercises")
    assert report.cell_errors == []
    by_id = {result.exercise_id: result for result in report.results}
    policy = "minidecode.cache_policies.cap_nuc"
    assert by_id["09.1"].status == "imported"
    assert by_id["09.1"].detail == (f"novelty_scores is {policy}.novelty_scores, imported rather "
                                    "than written in the notebook: 0 points")
    assert by_id["09.2"].status == "imported"
    assert by_id["09.2"].detail.startswith(
        f"catalyst_scores is functools.partial({policy}.catalyst_scores), imported")
    assert by_id["09.3"].status == "delegates"
    assert by_id["09.3"].detail.startswith(f"infinipot_keep runs {policy}.infinipot_keep, ")
    assert by_id["09.4"].status == "passed", by_id["09.4"].detail  # own work, decorated
    assert (report.earned, report.possible) == (1, 9)  # 09.5 adds 3, 09.6 and 09.7 one each
