"""End to end in a real browser: widgets exist only there.

Starts JupyterLab on loopback (empty token) the way ``make lab`` does, serving the repository
root (``--ServerApp.root_dir=<repo>``), with autosave off so that nothing is written back. It opens
a chapter notebook in headless Chromium through Playwright, runs all cells, moves a playground's
slider with the keyboard and asserts that what the playground shows (its printed readout and its
plot) changed. A chapter with a playground adds one line to PLAYGROUNDS. A second test opens an
exercise notebook from the file browser, as a student does after ``make lab``.

Chromium is Debian's package (`apt-get install chromium`, /usr/bin/chromium); Playwright's own
browser download is not used. Without Chromium the test is skipped, except under CI=true, where it
fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MINIDECODE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# (notebook, the slider's description, how many ArrowRight presses to move it)
PLAYGROUNDS = [
    ("notebooks/00_tour.ipynb", "temperature", 6),
    ("notebooks/02_adaptive_decoding.ipynb", "epsilon", 6),
    ("notebooks/03_temperature_scheduling.ipynb", "theta", 5),
    ("notebooks/10_gpu_kernels.ipynb", "top-p", 2),
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser() -> None:
    problems = []
    if not Path(CHROMIUM).is_file():
        problems.append(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (pip install -e '.[dev]')")
    if problems and IN_CI:
        pytest.fail("browser test must run in CI: " + "; ".join(problems))
    if problems:
        pytest.skip("; ".join(problems))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter_lab() -> Iterator[tuple[str, Path]]:
    """A JupyterLab server on 127.0.0.1 serving the repository root, as ``make lab`` does.

    Its configuration, runtime files, workspaces and settings live in a scratch folder; the
    settings turn autosave off, so running a notebook in the browser never rewrites it.
    """
    _require_browser()
    scratch = Path(tempfile.mkdtemp(prefix="minidecode-browser-"))
    settings = scratch / ".settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}\n')
    port = _free_port()
    env = {
        **os.environ,
        # the kernel imports minidecode from this checkout, installed or not
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "JUPYTER_CONFIG_DIR": str(scratch / ".jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(scratch / ".jupyter-runtime"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={REPO}", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None", f"--LabApp.workspaces_dir={scratch / '.workspaces'}",
        f"--LabApp.user_settings_dir={scratch / '.settings'}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log_path = scratch / "jupyter.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url, scratch
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(scratch, ignore_errors=True)

@contextlib.contextmanager
def _lab_page(tmp_path: Path) -> Iterator:
    """A Chromium page at notebook width; a full-page screenshot is kept if the test fails."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("notebook", "slider", "presses"), PLAYGROUNDS, ids=[entry[0] for entry in PLAYGROUNDS]
)
def test_playground_slider_changes_the_output(
    jupyter_lab: tuple[str, Path], notebook: str, slider: str, presses: int, tmp_path: Path
) -> None:
    base_url, _ = jupyter_lab
    with _lab_page(tmp_path) as page:
        # ?reset: a fresh workspace, so the tabs an earlier test left open (JupyterLab keeps
        # them in the server's workspace) do not come back and take the focus
        _run_playground(page, f"{base_url}/lab/tree/{notebook}?reset", slider, presses)
        page.screenshot(path=str(tmp_path / "after.png"))


def _run_playground(page, url: str, slider: str, presses: int) -> None:
    page.goto(url, wait_until="domcontentloaded", timeout=120_000)
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=120_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    label = page.locator(".widget-label", has_text=slider)
    widget = page.locator(".widget-slider", has=label).first
    widget.wait_for(state="visible", timeout=180_000)
    widget.scroll_into_view_if_needed()
    playground = page.locator(".widget-vbox", has=widget).first
    readout = widget.locator(".widget-readout")
    output = playground.locator(".jp-OutputArea-output")

    # wait for the playground's first drawing: its printed line and its plot
    output.filter(has=page.locator("img")).first.wait_for(timeout=120_000)
    page.wait_for_function(
        "(el) => el.innerText.trim().length > 0", arg=output.first.element_handle(), timeout=60_000
    )
    before_value = readout.inner_text().strip()
    before_text = playground.locator(".jp-OutputArea").inner_text().strip()
    before_image = playground.locator("img").first.get_attribute("src")

    widget.locator(".noUi-handle").first.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
        time.sleep(0.1)

    page.wait_for_function(
        "([el, before]) => el.innerText.trim() !== before && el.querySelector('img')",
        arg=[playground.locator(".jp-OutputArea").element_handle(), before_text],
        timeout=240_000,  # the kernel finishes the cells after the playground first
    )
    after_text = _settled_text(playground.locator(".jp-OutputArea"))
    after_value = readout.inner_text().strip()
    after_image = playground.locator("img").first.get_attribute("src")
    print(f"{slider}: {before_value} -> {after_value}; output {before_text!r} -> {after_text!r}")

    assert after_value != before_value, f"the slider readout stayed at {before_value}"
    assert after_text != before_text, f"the playground still prints {before_text!r}"
    assert after_image and after_image != before_image, "the plot was not redrawn"


def test_exercise_opens_from_the_file_browser(jupyter_lab: tuple[str, Path], tmp_path: Path
                                              ) -> None:
    base_url, _ = jupyter_lab
    with _lab_page(tmp_path) as page:
        page.goto(f"{base_url}/lab?reset", wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.jupyterapp", timeout=120_000)
        page.evaluate("async () => { await window.jupyterapp.restored;"
                      " await window.jupyterapp.commands.execute('filebrowser:activate'); }")
        listing = page.locator(".jp-FileBrowser .jp-DirListing-item")
        for folder in ("exercises", "notebooks"):          # both at the root, as in make lab
            listing.filter(has_text=folder).first.wait_for(timeout=120_000)
        listing.filter(has_text="exercises").first.dblclick()
        exercise = listing.filter(has_text="01_decode_loop.ipynb").first
        exercise.wait_for(timeout=60_000)
        exercise.dblclick()
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.context"
            " && window.jupyterapp.shell.currentWidget.context.path"
            " === 'exercises/01_decode_loop.ipynb'",
            timeout=120_000,
        )
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)


def _settled_text(locator, *, quiet_seconds: float = 1.0, limit_seconds: float = 30.0) -> str:
    """The locator's text once it has stopped changing (each key press may redraw)."""
    deadline = time.monotonic() + limit_seconds
    text = locator.inner_text().strip()
    while time.monotonic() < deadline:
        time.sleep(quiet_seconds)
        newer = locator.inner_text().strip()
        if newer == text and locator.locator("img").count() > 0:
            return text
        text = newer
    return text
