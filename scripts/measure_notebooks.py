"""Peak memory and CPU time of running each chapter notebook once, in a fresh kernel.

What one student's server needs, measured rather than guessed: for every ``notebooks/*.ipynb``
(or the paths given), start a fresh kernel of this Python, run all cells (in memory; the file is
not rewritten), then read the kernel process's peak resident memory (``VmHWM`` in
``/proc/PID/status``) and its CPU time (user + system, its threads and waited-for children
included, from ``/proc/PID/stat``) before shutting it down. CPU time, not wall time, is the
number to size a machine with: it does not grow when other processes share the cores.

    python scripts/measure_notebooks.py                         # table on stdout
    python scripts/measure_notebooks.py --json runs/measure.json --threads 1

Linux only (it reads /proc). ``--threads`` sets OMP/MKL threads in the kernel, as a hub's CPU
limit would; the default leaves torch's own choice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError
from nbclient.util import run_sync

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may hold spaces): utime stime cutime cstime are 14-17.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def measure(path: Path, timeout: int, threads: int | None) -> dict:
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    sys.path.insert(0, str(REPO))
    from minidecode.course.grading import _current_env_kernel_manager

    km = _current_env_kernel_manager()  # a kernel of this very Python
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    errors: list[str] = []
    index = 0
    with client.setup_kernel(env=env):
        pid = km.provisioner.process.pid
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        except CellTimeoutError:  # the row still says how far it got, marked as unfinished
            errors.append(f"cell {index + 1} ran past {timeout} s (wall clock); not finished")
        finally:
            wall = time.monotonic() - started
            peak, cpu = _peak_rss_mib(pid), _cpu_seconds(pid)
            run_sync(km.shutdown_kernel)(now=True)
    for cell in nb.cells:
        errors += [f"{out.ename}: {out.evalue}" for out in cell.get("outputs", [])
                   if out.output_type == "error"]
    return {"notebook": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
            "peak_rss_mib": round(peak, 1), "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=None,
                        help="wall-clock seconds per cell (default: no limit)")
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads in the kernel")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((REPO / "notebooks").glob("*.ipynb"))
    rows = []
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print("| notebook | peak RSS (MiB) | CPU time (s) | wall (s) | errors |")
    print("|---|---:|---:|---:|---|")
    for path in paths:
        row = measure(path, args.timeout, args.threads)
        rows.append(row)
        print(f"| {row['notebook']} | {row['peak_rss_mib']:.0f} | {row['cpu_s']:.1f} | "
              f"{row['wall_s']:.0f} | {len(row['errors']) or ''} |", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    total_cpu = sum(row["cpu_s"] for row in rows)
    print(f"| all ({len(rows)}) | max {max(row['peak_rss_mib'] for row in rows):.0f} | "
          f"{total_cpu:.1f} | {sum(row['wall_s'] for row in rows):.0f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
