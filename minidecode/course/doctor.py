"""``python -m minidecode doctor``: what is installed and usable, to paste into bug reports.

Each line starts with ``[OK]``, ``[FAIL]`` (needed and missing or too old) or ``[--]`` (optional and
absent). The dependency list is read from ``pyproject.toml`` in a source checkout, otherwise from
the installed package's metadata, so it never drifts from what ``pip install`` asked for.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import minidecode

__all__ = ["collect_requirements", "main", "run_doctor"]

PACKAGE_DIR = Path(minidecode.__file__).resolve().parent
MODELS_DIR = PACKAGE_DIR / "models"
REQUIRED_GROUPS = ("core", "notebooks")  # a student needs these; dev and gpu-* are optional
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def collect_requirements() -> dict[str, list[str]]:
    """``{"core": [...], "notebooks": [...], "dev": [...], ...}`` requirement strings."""
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        tomllib = None
    if pyproject.is_file() and tomllib is not None:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        if project.get("name") == "minidecode":
            groups = {"core": list(project.get("dependencies", []))}
            groups.update(project.get("optional-dependencies", {}))
            return groups
    groups: dict[str, list[str]] = {"core": []}
    for line in metadata.requires("minidecode") or []:
        requirement, _, marker = line.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        groups.setdefault(extra.group(1) if extra else "core", []).append(requirement.strip())
    return groups


def _status(requirement: str, required: bool) -> tuple[str, str]:
    name = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
    specifier = requirement[len(name):].strip()
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return ("FAIL" if required else "--"), f"{name} not installed"
    if specifier and not _satisfies(version, specifier):
        return ("FAIL" if required else "--"), f"{name} {version} (needs {specifier})"
    return "OK", f"{name} {version}"


def _satisfies(version: str, specifier: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # packaging comes with pip's usual company; without it, do not guess
        return True
    return SpecifierSet(specifier).contains(version, prereleases=True)


def _torch_lines() -> list[tuple[str, str]]:
    try:
        import torch
    except Exception as err:  # a broken torch install raises more than ImportError
        return [("FAIL", f"torch does not import: {type(err).__name__}: {err}")]
    lines = [("OK", f"torch {torch.__version__}, CPU threads: {torch.get_num_threads()}")]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        lines.append(("OK", f"torch device: cuda ({name}, CUDA {torch.version.cuda})"))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        lines.append(("OK", "torch device: mps (Apple GPU)"))
    else:
        cuda_build = f"CUDA build {torch.version.cuda}" if torch.version.cuda else "CPU build"
        lines.append(("OK", f"torch device: cpu ({cuda_build}; no usable GPU)"))
    return lines


def _gpu_lines() -> list[tuple[str, str]]:
    smi = shutil.which("nvidia-smi")
    lines = [("OK" if smi else "--", f"nvidia-smi: {smi or 'not found (no NVIDIA driver)'}")]
    try:
        import cupy
    except ImportError:
        lines.append(("--", "cupy not installed (chapter 10 only: pip install -e '.[gpu-cuda12]')"))
        return lines
    except Exception as err:
        lines.append(("FAIL", f"cupy does not import: {type(err).__name__}: {err}"))
        return lines
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
        total = int(cupy.arange(4).sum())  # a real kernel launch, not just a driver query
        if total != 6:
            raise RuntimeError(f"arange(4).sum() gave {total}")
        lines.append(("OK", f"cupy {cupy.__version__}: {devices} GPU(s) usable"))
    except Exception as err:
        lines.append(("FAIL", f"cupy {cupy.__version__} installed but no usable GPU: {err}"))
    return lines


def _model_lines() -> list[tuple[str, str]]:
    if not MODELS_DIR.is_dir():
        return [("--", f"no shipped models yet ({MODELS_DIR} does not exist)")]
    lines = [("OK", f"models folder: {MODELS_DIR}")]
    model_dirs = sorted(path for path in MODELS_DIR.iterdir() if path.is_dir())
    if not model_dirs:
        lines.append(("--", "no models in it yet"))
    for model_dir in model_dirs:
        if model_dir.name.startswith((".", "_")):
            continue
        missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
        size_mb = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) / 1e6
        if missing:
            lines.append(("FAIL", f"{model_dir.name}: missing {', '.join(missing)}"))
        else:
            lines.append(("OK", f"{model_dir.name}: {size_mb:.1f} MB"))
    return lines


def run_doctor(print_line: Callable[[str], None] = print) -> int:
    """Print the report; return 0 when everything needed is there, 1 otherwise."""
    failures = 0

    def emit(status: str, text: str) -> None:
        nonlocal failures
        failures += status == "FAIL"
        print_line(f"[{status}]{' ' * (5 - len(status))}{text}")

    print_line("minidecode doctor (paste all of this into a bug report)")
    emit("OK", f"minidecode {minidecode.__version__} at {PACKAGE_DIR}")
    python_ok = sys.version_info >= (3, 10)
    emit("OK" if python_ok else "FAIL", f"python {platform.python_version()} at {sys.executable}")
    emit("OK", f"platform {platform.platform()}")
    for group, requirements in collect_requirements().items():
        print_line(f"-- {group if group == 'core' else group + ' extra'}")
        for requirement in requirements:
            emit(*_status(requirement, required=group in REQUIRED_GROUPS))
    print_line("-- torch")
    for line in _torch_lines():
        emit(*line)
    print_line("-- GPU and CuPy")
    for line in _gpu_lines():
        emit(*line)
    print_line("-- shipped models")
    for line in _model_lines():
        emit(*line)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    print_line("-- browser test")
    emit("OK" if chromium else "--", f"chromium: {chromium or 'not found (apt install chromium)'}")
    verdict = f"{failures} problem(s)" if failures else "all needed dependencies OK"
    print_line(f"summary: {verdict}")
    return 1 if failures else 0


def main() -> int:
    return run_doctor()


if __name__ == "__main__":
    sys.exit(main())
