"""The course on real nbgrader, end to end, in a temporary folder: no mocks.

`python -m minidecode.course nbgrader COURSE` builds the course directory; then, with nbgrader's
own API and exchange classes (what its command-line apps and JupyterLab extensions call), the
instructor generates and releases chapter 1 through a local exchange folder, students fetch and
submit, the instructor collects, autogrades and generates feedback, and the gradebook's scores
are compared with `python -m minidecode grade`'s on the very notebooks submitted: full marks for
the solved one, zero for the unsolved one. Bad input: a file that is not a notebook, a notebook
under the wrong name (refused at submission), and a notebook that never finishes (interrupted at
the cell time limit: 0, with the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install -e '.[dev]')")

from nbgrader.api import Gradebook  # noqa: E402
from nbgrader.apps import NbGraderAPI  # noqa: E402
from nbgrader.auth import Authenticator  # noqa: E402
from nbgrader.coursedir import CourseDirectory  # noqa: E402
from nbgrader.exchange import ExchangeError  # noqa: E402
from nbgrader.exchange.default import (  # noqa: E402
    ExchangeFetchAssignment,
    ExchangeFetchFeedback,
    ExchangeSubmit,
)
from traitlets.config import Config, PyFileConfigLoader  # noqa: E402

from minidecode.course.grading import exercises_for_chapter, grade_notebook  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT, NOTEBOOK = "ch01", "01_decode_loop.ipynb"
TIMEOUT_S = 20  # the never-finishing notebook's cell limit; the others get the course's 300 s


def _instructor(course: Path, exchange: Path, timeout: int | None = None) -> NbGraderAPI:
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.Exchange.root = str(exchange)
    if timeout is not None:
        config.Execute.timeout = timeout
    return NbGraderAPI(config=config)


def _student_config(home: Path, exchange: Path, student: str, assignment: str) -> Config:
    config = Config()
    config.CourseDirectory.course_id = "minidecode"
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    config.Exchange.root = str(exchange)
    config.Exchange.assignment_dir = str(home)
    config.ExchangeSubmit.strict = True
    return config


def _as_student(cls, home: Path, exchange: Path, student: str, assignment: str = ASSIGNMENT):
    home.mkdir(parents=True, exist_ok=True)
    config = _student_config(home, exchange, student, assignment)
    coursedir = CourseDirectory(config=config)
    return cls(coursedir=coursedir, authenticator=Authenticator(config=config), config=config)


def _solve(student_nb: Path, source_nb: Path) -> None:
    """Put the source's answers into the student's solution cells (matched by grade_id)."""
    answers = {
        cell["metadata"]["nbgrader"]["grade_id"]: cell["source"]
        for cell in json.loads(source_nb.read_text())["cells"]
        if cell["metadata"].get("nbgrader", {}).get("solution")
    }
    nb = json.loads(student_nb.read_text())
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    student_nb.write_text(json.dumps(nb))


def _never_finishes(student_nb: Path) -> None:
    nb = json.loads(student_nb.read_text())
    first_answer = next(cell for cell in nb["cells"]
                        if cell["metadata"].get("nbgrader", {}).get("solution"))
    first_answer["source"] = "import time\n\ntime.sleep(3600)\n"
    student_nb.write_text(json.dumps(nb))


def _ok(result: dict, what: str) -> None:
    assert result["success"], f"{what} failed:\n{result.get('log')}\n{result.get('error')}"


def test_course_on_nbgrader_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # nbgrader runs `alembic` (installed beside it) for its gradebook: the venv's bin/ on PATH,
    # as when the environment is activated.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    course, exchange, homes = tmp_path / "course", tmp_path / "exchange", tmp_path / "home"
    exchange.mkdir()
    build = subprocess.run(
        [sys.executable, "-m", "minidecode.course", "nbgrader", str(course),
         "--exchange", str(exchange), "--chapter", "01"],
        capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, build.stderr
    source_nb = course / "source" / ASSIGNMENT / NOTEBOOK
    points = sum(ex.points for ex in exercises_for_chapter("01").values())

    instructor = _instructor(course, exchange)
    _ok(instructor.generate_assignment(ASSIGNMENT), "generate_assignment")
    released = json.loads((course / "release" / ASSIGNMENT / NOTEBOOK).read_text())
    assert "### BEGIN SOLUTION" not in json.dumps(released), "answers leaked into the release"
    _ok(instructor.release_assignment(ASSIGNMENT), "release_assignment")

    # Students fetch chapter 1 and work on it.
    for student in ("alice", "bob", "carol", "dave", "erin"):
        _as_student(ExchangeFetchAssignment, homes / student, exchange, student).start()
        assert (homes / student / ASSIGNMENT / NOTEBOOK).is_file()
    _solve(homes / "alice" / ASSIGNMENT / NOTEBOOK, source_nb)  # bob submits it unsolved
    (homes / "carol" / ASSIGNMENT / NOTEBOOK).write_text("print('my answers')\n")  # no notebook
    (homes / "dave" / ASSIGNMENT / NOTEBOOK).rename(
        homes / "dave" / ASSIGNMENT / "02_adaptive_decoding.ipynb"
    )
    _never_finishes(homes / "erin" / ASSIGNMENT / NOTEBOOK)

    for student in ("alice", "bob", "carol", "erin"):
        _as_student(ExchangeSubmit, homes / student, exchange, student).start()
    # A notebook under another name is refused at submission, with what was expected.
    with pytest.raises(ExchangeError):
        _as_student(ExchangeSubmit, homes / "dave", exchange, "dave").start()
    inbound = exchange / "minidecode" / "inbound"
    assert not any(path.name.startswith("dave+") for path in inbound.iterdir())
    # An assignment that was never released cannot be submitted either.
    (homes / "dave" / "ch1").mkdir()
    with pytest.raises(ExchangeError):
        _as_student(ExchangeSubmit, homes / "dave", exchange, "dave", assignment="ch1").start()

    _ok(instructor.collect(ASSIGNMENT), "collect")
    for student in ("alice", "bob"):
        _ok(instructor.autograde(ASSIGNMENT, student), f"autograde {student}")
    carol = instructor.autograde(ASSIGNMENT, "carol")
    assert not carol["success"], "a file that is not a notebook was autograded"
    _ok(_instructor(course, exchange, timeout=TIMEOUT_S).autograde(ASSIGNMENT, "erin"),
        "autograde erin")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_assignment(ASSIGNMENT).max_score == points
        nbgrader_scores = {s: gb.find_submission(ASSIGNMENT, s).score for s in ("alice", "bob")}
        erin = gb.find_submission(ASSIGNMENT, "erin").score

    # `minidecode grade` on the very notebooks the students submitted.
    grade_scores = {
        student: grade_notebook(homes / student / ASSIGNMENT / NOTEBOOK).earned
        for student in ("alice", "bob")
    }
    assert grade_scores == {"alice": points, "bob": 0}
    assert nbgrader_scores == grade_scores
    assert erin == 0

    report = subprocess.run(
        [sys.executable, "-m", "minidecode.course", "report", str(course), ASSIGNMENT, "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert report.returncode == 0, report.stderr
    rows = {row["student"]: row for row in json.loads(report.stdout)}
    assert rows["alice"]["score"] == points and rows["alice"]["reasons"] == []
    assert rows["bob"]["score"] == 0
    assert any("not implemented yet" in reason for reason in rows["bob"]["reasons"])
    assert rows["carol"]["score"] == 0
    assert any("is not a Jupyter notebook" in reason for reason in rows["carol"]["reasons"])
    assert rows["erin"]["score"] == 0
    assert any("cell 4 ran past the time limit" in reason
               for reason in rows["erin"]["reasons"])
    assert "dave" not in rows

    _ok(instructor.generate_feedback(ASSIGNMENT), "generate_feedback")
    feedback = course / "feedback" / "alice" / ASSIGNMENT / NOTEBOOK.replace(".ipynb", ".html")
    assert feedback.is_file()
    _ok(instructor.release_feedback(ASSIGNMENT, "alice"), "release_feedback")
    _as_student(ExchangeFetchFeedback, homes / "alice", exchange, "alice").start()
    fetched = list((homes / "alice" / ASSIGNMENT / "feedback").glob("*/*.html"))
    assert fetched, "alice fetched no feedback"
    print(fetched[0].read_text()[:3000])
