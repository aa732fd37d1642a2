"""Chapter 10's student-written CUDA kernel (solutions/10_gpu_kernels.ipynb, after 10.1): the body
of a one-thread-a-row kernel for Chan's merge, which the notebook compiles with ``cupy.RawKernel``
only when a GPU is present. On a machine without one, the solution's kernel must still compile
(``nvcc -ptx``), use nothing NVRTC lacks, and, compiled as host C++ and run on the CPU, merge
exactly as the package's ``merge_moments`` does; the exercise notebook must stub only the body."""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from minidecode.course.checks.ch10 import _logits, _moments
from minidecode.kernels.softmax_entropy import merge_moments

REPO = Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")
CXX = shutil.which("g++") or shutil.which("c++")
NAMES = ("m", "mass", "mean", "var")


def _kernel_cell(folder: str) -> str:
    nb = json.loads((REPO / folder / "10_gpu_kernels.ipynb").read_text(encoding="utf-8"))
    cells = ["".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code"]
    found = [source for source in cells if "def merge_moments_cuda(" in source]
    assert len(found) == 1, f"{folder}: one cell defines merge_moments_cuda, found {len(found)}"
    return found[0]


def _namespace(folder: str) -> dict:
    namespace: dict = {}
    exec(compile(_kernel_cell(folder), f"{folder}/10_gpu_kernels.ipynb", "exec"), namespace)
    return namespace


def test_the_solution_kernel_uses_nothing_nvrtc_lacks() -> None:
    source = _namespace("solutions")["merge_kernel_source"]()
    assert "BODY" not in source
    code = re.sub(r"//[^\n]*", "", source)
    for missing in ("INFINITY", "#include", "FLT_MAX", "DBL_MAX", "size_t", "printf", "std::",
                    "isfinite", "isinf", "HUGE_VAL"):
        assert missing not in code, f"NVRTC has no {missing} (or needs a header for it)"
    assert 'extern "C" __global__ void merge_moments_kernel(' in source


def test_the_exercise_stubs_only_the_kernels_body() -> None:
    exercise = _kernel_cell("exercises")
    assert "MERGE_KERNEL = r" in exercise and "def merge_kernel_source(" in exercise
    assert "raise NotImplementedError()" in exercise and "exp(m_a[i]" not in exercise
    namespace = _namespace("exercises")
    with pytest.raises(NotImplementedError):   # the optional cell says to write it first
        namespace["merge_kernel_source"]()


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: the compile check needs the CUDA "
                                         "toolkit")
def test_the_solution_kernel_compiles_to_ptx(tmp_path: Path) -> None:
    path = tmp_path / "merge_moments_kernel.cu"
    path.write_text(_namespace("solutions")["merge_kernel_source"](), encoding="utf-8")
    done = subprocess.run([NVCC, "-ptx", "-arch=sm_80", "--std=c++14", "--output-directory",
                           str(tmp_path), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr
    assert ".entry merge_moments_kernel(" in (tmp_path / "merge_moments_kernel.ptx").read_text()


HOST = r"""
#include <cmath>
using std::exp;
using std::fmax;

extern "C" void merge_rows(
        const double* m_a, const double* mass_a, const double* mean_a, const double* var_a,
        const double* m_b, const double* mass_b, const double* mean_b, const double* var_b,
        double* m, double* mass, double* mean, double* var, long long rows) {
    for (long long i = 0; i < rows; ++i) {   // the grid, one row after the other
BODY
    }
}
"""


def _parts() -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Rows of the 10.1 kinds: same max, far-apart maxima, an empty part on either side or both,
    masked tokens, large scales."""
    a, b = [], []
    for seed, scale, size_a, size_b in [(0, 3.0, 5, 7), (1, 30.0, 9, 1), (2, 0.5, 3, 3),
                                        (3, 3.0, 0, 4), (4, 3.0, 6, 0), (5, 3.0, 0, 0)]:
        rows = _logits(8, 16, seed, scale, masked=0.3)
        rows[::2, 8:] += 40.0                                  # far-apart maxima
        empty = torch.full((8, 2), float("-inf"))
        a.append(_moments(rows[:, :size_a] if size_a else empty))
        b.append(_moments(rows[:, 8:8 + size_b] if size_b else empty))
    return (tuple(torch.cat(parts) for parts in zip(*a)),
            tuple(torch.cat(parts) for parts in zip(*b)))


@pytest.mark.skipif(CXX is None, reason="no C++ compiler on PATH")
def test_the_solution_kernels_body_merges_as_the_package_does_on_the_cpu(tmp_path: Path) -> None:
    body = _namespace("solutions")["merge_moments_cuda"]()
    source = tmp_path / "merge_rows.cpp"
    source.write_text(HOST.replace("BODY", body), encoding="utf-8")
    library = tmp_path / "merge_rows.so"
    done = subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    merge_rows = ctypes.CDLL(str(library)).merge_rows
    a, b = _parts()
    rows = a[0].shape[0]
    inputs = [np.ascontiguousarray(t.numpy(), dtype=np.float64) for t in (*a, *b)]
    outputs = [np.zeros(rows, dtype=np.float64) for _ in NAMES]
    pointer = ctypes.POINTER(ctypes.c_double)
    merge_rows(*(x.ctypes.data_as(pointer) for x in (*inputs, *outputs)), ctypes.c_longlong(rows))
    expected = merge_moments(a, b)
    assert bool((a[1] == 0).any() and (b[1] == 0).any() and ((a[1] == 0) & (b[1] == 0)).any())
    for name, got, wanted in zip(NAMES, outputs, expected):
        got = torch.from_numpy(got)
        assert not got.isnan().any(), name
        torch.testing.assert_close(got, wanted, rtol=1e-12, atol=1e-12, msg=name)
