"""The house itself: layout, install files that agree, the CLI, the doctor, chapter 00's module."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidecode.course.tour import entropy_bits, softmax_with_temperature

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_NAME = re.compile(r"^\d{2}_[a-z0-9_]+\.ipynb$")


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)


def _canonical(requirement: str) -> str:
    """'Scikit_Learn >= 1.0' -> 'scikit-learn>=1.0': PEP 503 name, no spaces."""
    name = re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0]
    rest = requirement.strip()[len(name):].replace(" ", "")
    return re.sub(r"[-_.]+", "-", name).lower() + rest


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- layout and install


@pytest.mark.parametrize(
    "relative",
    ["notebooks", "minidecode", "exercises", "solutions", "tests", "environment.yml", "README.md",
     "pyproject.toml", ".ci/run", "Makefile", "tests/nbval_sanitize.cfg"],
)
def test_layout_has(relative: str) -> None:
    assert (REPO / relative).exists(), f"{relative} is missing from the repository root"


@pytest.mark.parametrize("folder", ["notebooks", "solutions", "exercises"])
def test_notebooks_are_numbered_in_teaching_order(folder: str) -> None:
    names = [path.name for path in (REPO / folder).glob("*.ipynb")]
    assert names, f"{folder}/ holds no notebook"
    for name in names:
        assert NOTEBOOK_NAME.match(name), f"{folder}/{name}: expected NN_lower_snake.ipynb"


def test_exercise_notebooks_share_their_chapter_name() -> None:
    """Each exercise notebook belongs to a chapter of the same name, except the capstone: a
    project with no lesson of its own (its brief is the notebook; docs/instructor/capstone.md)."""
    chapters = {path.name for path in (REPO / "notebooks").glob("*.ipynb")}
    chapters.add("12_capstone.ipynb")
    assert (REPO / "docs" / "instructor" / "capstone.md").exists()
    for folder in ("solutions", "exercises"):
        for path in (REPO / folder).glob("*.ipynb"):
            assert path.name in chapters, f"{folder}/{path.name} has no notebooks/{path.name}"


def test_pyproject_declares_the_extras() -> None:
    project = _pyproject()["project"]
    extras = {group: {_canonical(req).split("[")[0] for req in reqs}
              for group, reqs in project["optional-dependencies"].items()}
    assert {"jupyterlab", "ipywidgets", "matplotlib", "seaborn", "tqdm"} <= extras["notebooks"]
    assert {"pytest", "nbval", "hypothesis", "ruff", "playwright"} <= extras["dev"]
    assert extras["gpu-cuda12"] == {"cupy-cuda12x"}
    assert extras["gpu-cuda13"] == {"cupy-cuda13x"}
    core = {re.split(r"[<>=!~]", _canonical(req))[0] for req in project["dependencies"]}
    assert {"numpy", "torch", "safetensors", "tokenizers", "transformers"} <= core


def test_environment_yml_installs_what_pyproject_declares() -> None:
    """environment.yml's pip list == pyproject core + notebooks + dev (as a set of requirements).

    To add a package, add it to pyproject.toml's list and to environment.yml's pip list.
    """
    yaml = pytest.importorskip("yaml")
    environment = yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))
    conda_packages = [dep for dep in environment["dependencies"] if isinstance(dep, str)]
    assert any(dep.startswith("python") for dep in conda_packages)
    assert "pip" in conda_packages
    pip_lists = [dep["pip"] for dep in environment["dependencies"] if isinstance(dep, dict)]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    pip_entries = pip_lists[0]
    installs_package = [entry for entry in pip_entries if entry.startswith("-e")]
    assert installs_package == ["-e .[notebooks,dev]"], "environment.yml must install the package"
    from_conda = {_canonical(entry) for entry in pip_entries if not entry.startswith("-")}

    project = _pyproject()["project"]
    from_pyproject = {_canonical(req) for req in project["dependencies"]}
    for extra in ("notebooks", "dev"):
        from_pyproject |= {_canonical(req) for req in project["optional-dependencies"][extra]}
    assert from_conda - from_pyproject == set(), "in environment.yml but not in pyproject.toml"
    assert from_pyproject - from_conda == set(), "in pyproject.toml but not in environment.yml"


def test_makefile_has_the_two_commands_and_pins_cpu_torch() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^lab:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "torch==$(TORCH_VERSION)" in makefile and "nvidia-smi" in makefile
    assert "--nbval-lax" in makefile and "--nbval-current-env" in makefile
    dry_run = _run("make", "-n", "test", "VENV=/nonexistent-venv")
    assert dry_run.returncode == 0, dry_run.stderr
    assert "ruff check" in dry_run.stdout and "pytest" in dry_run.stdout


def test_ci_script_is_valid_bash_and_runs_the_readme_command() -> None:
    script = (REPO / ".ci/run").read_text(encoding="utf-8")
    assert _run("bash", "-n", ".ci/run").returncode == 0
    assert "apt-get install" in script and "chromium" in script
    assert "make test" in script


def test_readme_shows_the_two_commands_conda_chapters_grading_and_gpu() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for needle in ("make lab", "make test", "conda env create -f environment.yml",
                   "python -m minidecode grade", "python -m minidecode doctor", "gpu-cuda12"):
        assert needle in readme, f"README.md does not mention {needle!r}"
    for chapter in range(11):
        row = re.search(rf"^\|\s*{chapter:02d}\s*\|", readme, re.M)
        assert row, f"README.md's chapter table has no row for {chapter:02d}"


# --------------------------------------------------------------------------- CLI and doctor


def test_cli_help() -> None:
    result = _run(sys.executable, "-m", "minidecode", "--help")
    assert result.returncode == 0
    for command in ("doctor", "grade", "exercises"):
        assert command in result.stdout


def test_doctor_reports_every_dependency_torch_gpu_and_models() -> None:
    result = _run(sys.executable, "-m", "minidecode", "doctor")
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    status_lines = [line for line in lines if line.startswith("[")]
    assert all(re.match(r"^\[(OK|FAIL|--)\]\s", line) for line in status_lines), status_lines
    for needle in ("numpy", "torch device:", "nvidia-smi", "cupy", "models", "jupyterlab"):
        assert any(needle in line for line in status_lines), f"doctor says nothing about {needle}"
    core = {"numpy", "torch", "safetensors", "tokenizers", "transformers"}
    for line in status_lines:
        name = line.split()[1]
        assert not (name in core and line.startswith("[FAIL]")), line
    assert lines[-1].startswith("summary:")


# --------------------------------------------------------------------------- chapter 00's module


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=20),
    st.floats(0.05, 20.0),
)
def test_softmax_with_temperature_is_a_distribution_matching_torch(values, temperature) -> None:
    logits = torch.tensor(values)
    probs = softmax_with_temperature(logits, temperature)
    assert probs.shape == logits.shape and probs.dtype == logits.dtype
    assert torch.isclose(probs.sum(), torch.tensor(1.0), atol=1e-5)
    torch.testing.assert_close(probs, torch.softmax(logits / temperature, dim=-1))


def test_softmax_with_temperature_is_stable_and_batched() -> None:
    probs = softmax_with_temperature(torch.tensor([[1000.0, 0.0], [0.0, 0.0]]), 1.0)
    torch.testing.assert_close(probs, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), float("nan"), "1", None, True])
def test_softmax_with_temperature_rejects_bad_temperatures(temperature) -> None:
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(torch.zeros(3), temperature)


def test_entropy_bits_bounds() -> None:
    assert entropy_bits(torch.tensor([1.0, 0.0, 0.0])).item() == 0.0
    assert entropy_bits(torch.full((8,), 1 / 8)).item() == pytest.approx(3.0)
