"""The course on a real JupyterHub, on 127.0.0.1 only: an instructor and two students.

The hub runs deploy/hub/jupyterhub_config.py, with the two parts a real deployment replaces
added by this test: DummyAuthenticator (any user name, one shared password) and
SimpleLocalProcessSpawner (every server a local process of the project's environment, one Unix
user for all). configurable-http-proxy comes from npm (`npm install --prefix .hub
configurable-http-proxy`; the test runs it when node and npm are there but the proxy is not).

Everything goes through HTTP with tokens, as a browser's extensions would: each user gets a token
from the hub's REST API with their password, starts their server, and then the instructor
generates and releases chapter 1 through nbgrader's formgrader API, the students fetch it through
nbgrader's assignment-list API, edit it through Jupyter's contents API (one solves it, one does
not) and submit, and the instructor collects and autogrades; the gradebook's scores are full marks
and zero. Every process the test started is stopped at the end, with bounded waits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("jupyterhub", reason="jupyterhub is not installed (pip install -e '.[dev]')")
pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install -e '.[dev]')")
requests = pytest.importorskip("requests")

from minidecode.course.grading import exercises_for_chapter  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOCAL_PROXY = REPO / ".hub" / "node_modules" / ".bin" / "configurable-http-proxy"
INSTRUCTOR, STUDENTS = "instructor", ("student1", "student2")
PASSWORD = uuid.uuid4().hex
ASSIGNMENT, NOTEBOOK = "ch01", "01_decode_loop.ipynb"
HTTP_TIMEOUT = 300  # autograding a notebook on a busy machine


def _proxy_or_skip() -> None:
    if LOCAL_PROXY.exists() or shutil.which("configurable-http-proxy"):
        return
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip("node and npm are not installed, so configurable-http-proxy cannot run "
                    "(apt-get install nodejs npm)")
    major = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    # configurable-http-proxy 5 needs node >= 20; 4.6 runs on older ones (Debian 12 has 18).
    package = "configurable-http-proxy" if int(major or 0) >= 20 else "configurable-http-proxy@^4.6"
    install = subprocess.run(
        [npm, "install", "--prefix", str(REPO / ".hub"), "--no-audit", "--no-fund", package],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0 and LOCAL_PROXY.exists(), install.stderr[-2000:]


def _free_port_block(count: int = 3) -> int:
    """A port P with P .. P+count-1 all free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no block of free ports on 127.0.0.1")


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment holds MINIDECODE_HUB_TEST=marker: the ones this test made."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"MINIDECODE_HUB_TEST={marker}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _stop(pids: list[int], wait_s: float = 15) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.3)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Hub:
    def __init__(self, url: str) -> None:
        self.url = url
        self.tokens: dict[str, str] = {}

    def api(self, method: str, path: str, user: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.tokens[user]}"}
        return requests.request(method, f"{self.url}{path}", headers=headers,
                                timeout=HTTP_TIMEOUT, **kwargs)

    def login(self, user: str) -> None:
        """A token from the hub's REST API, for the user's name and password."""
        response = requests.post(
            f"{self.url}/hub/api/users/{user}/tokens",
            json={"auth": {"username": user, "password": PASSWORD}, "note": "course test",
                  "expires_in": 3600},
            timeout=60,
        )
        assert response.status_code in (200, 201), response.text
        self.tokens[user] = response.json()["token"]

    def on_server(self, user: str, method: str, path: str, **kwargs) -> dict:
        response = self.api(method, f"/user/{user}{path}", user, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} " \
            f"{response.text[-2000:]}"
        return response.json() if response.content else {}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Hub, Path, Path]]:
    _proxy_or_skip()
    state, homes, exchange = tmp_path / "state", tmp_path / "home", tmp_path / "exchange"
    for folder in (state, homes, exchange):
        folder.mkdir()
    exchange.chmod(0o777)
    course = homes / INSTRUCTOR
    build = subprocess.run(
        [sys.executable, "-m", "minidecode.course", "nbgrader", str(course),
         "--exchange", str(exchange), "--chapter", "01"],
        capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, build.stderr
    port, marker = _free_port_block(), uuid.uuid4().hex
    config = tmp_path / "jupyterhub_test_config.py"
    config.write_text(
        f"load_subconfig({str(REPO / 'deploy' / 'hub' / 'jupyterhub_config.py')!r})\n"
        "c = get_config()  # noqa: F821\n"
        "# Test-only: any listed user logs in with one password; servers are local processes.\n"
        "c.JupyterHub.authenticator_class = 'dummy'\n"
        f"c.DummyAuthenticator.password = {PASSWORD!r}\n"
        "c.JupyterHub.spawner_class = 'simple'\n"
        f"c.SimpleLocalProcessSpawner.home_dir_template = {str(homes)!r} + '/{{username}}'\n"
        f"c.Spawner.environment['MINIDECODE_HUB_TEST'] = {marker!r}\n"
        "c.JupyterHub.services = []\n"
        "c.JupyterHub.load_roles = []\n"
    )
    env = dict(os.environ, MINIDECODE_HUB_STATE=str(state), MINIDECODE_HUB_PORT=str(port),
               MINIDECODE_INSTRUCTORS=INSTRUCTOR, MINIDECODE_STUDENTS=",".join(STUDENTS),
               MINIDECODE_HOMES=str(homes), NBGRADER_EXCHANGE=str(exchange),
               MINIDECODE_HUB_TEST=marker)
    log = (tmp_path / "jupyterhub.log").open("w")
    process = subprocess.Popen(
        [str(VENV_BIN / "jupyterhub"), "-f", str(config)],
        cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "jupyterhub.log").read_text()[-4000:]
            try:
                if requests.get(f"{url}/hub/api/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the hub did not answer within 120 s"
            time.sleep(0.5)
        yield Hub(url), course, tmp_path
    finally:
        hub_api = Hub(url)
        for user in (INSTRUCTOR, *STUDENTS):  # stop the servers through the hub, bounded
            try:
                response = requests.post(
                    f"{url}/hub/api/users/{user}/tokens",
                    json={"auth": {"username": user, "password": PASSWORD}}, timeout=10)
                hub_api.tokens[user] = response.json()["token"]
                hub_api.api("DELETE", f"/hub/api/users/{user}/server", user).close()
            except Exception:
                pass
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        _stop(_processes_with(marker))
        log.close()
        assert not _processes_with(marker), "processes the test started are still running"


def _wait_ready(hub: Hub, user: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        model = hub.api("GET", f"/hub/api/users/{user}", user).json()
        server = model.get("servers", {}).get("")
        if server and server.get("ready"):
            return
        assert time.monotonic() < deadline, f"{user}'s server was not ready in {timeout_s} s"
        time.sleep(1)


def _solve(nb: dict, source: dict) -> None:
    answers = {
        cell["metadata"]["nbgrader"]["grade_id"]: cell["source"] for cell in source["cells"]
        if cell["metadata"].get("nbgrader", {}).get("solution")
    }
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]


def test_course_on_jupyterhub(hub: tuple[Hub, Path, Path]) -> None:
    client, course, tmp_path = hub
    users = (INSTRUCTOR, *STUDENTS)
    for user in users:
        client.login(user)
        response = client.api("POST", f"/hub/api/users/{user}/server", user)
        assert response.status_code in (201, 202), response.text
    for user in users:
        _wait_ready(client, user)
    # A student's token opens only the student's own server.
    stranger = client.api("GET", f"/user/{INSTRUCTOR}/api/status", STUDENTS[0],
                          allow_redirects=False)
    assert stranger.status_code in (302, 403), stranger.status_code

    def formgrader(path: str, method: str = "POST") -> dict:
        result = client.on_server(INSTRUCTOR, method, f"/formgrader/api{path}")
        if method == "POST":
            assert result.get("success"), f"{path}: {result.get('log')} {result.get('error')}"
        return result

    formgrader(f"/assignment/{ASSIGNMENT}/assign")  # nbgrader generate_assignment
    formgrader(f"/assignment/{ASSIGNMENT}/release")

    source = json.loads((course / "source" / ASSIGNMENT / NOTEBOOK).read_text())
    which = {"course_id": "minidecode", "assignment_id": ASSIGNMENT}
    for student in STUDENTS:
        client.on_server(student, "POST", "/assignments/fetch", data=which)
        contents = f"/api/contents/{ASSIGNMENT}/{NOTEBOOK}"
        nb = client.on_server(student, "GET", contents)["content"]
        if student == STUDENTS[0]:
            _solve(nb, source)
            client.on_server(student, "PUT", contents,
                             json={"type": "notebook", "format": "json", "content": nb})
        submitted = client.on_server(student, "POST", "/assignments/submit", data=which)
        assert submitted.get("success", True), submitted.get("value")

    formgrader(f"/assignment/{ASSIGNMENT}/collect")
    scores = {}
    for student in STUDENTS:
        formgrader(f"/submission/{ASSIGNMENT}/{student}/autograde")
        scores[student] = formgrader(f"/submission/{ASSIGNMENT}/{student}", method="GET")["score"]
    points = sum(ex.points for ex in exercises_for_chapter("01").values())
    assert scores == {STUDENTS[0]: points, STUDENTS[1]: 0}
    assert (course / "submitted" / STUDENTS[0] / ASSIGNMENT / NOTEBOOK).is_file()
