# JupyterHub configuration of the minidecode course on one machine (the course's own test runs it;
# see docs/instructor/running-a-course-of-300.md for the same course on Kubernetes).
#
#   .venv/bin/jupyterhub -f deploy/hub/jupyterhub_config.py
#
# Everything is set from the environment so that one file serves a trial run and the test:
#   MINIDECODE_HUB_STATE       folder for the hub's database, cookie secret and proxy pid (".")
#   MINIDECODE_HUB_PORT        the public port, on 127.0.0.1 only (8000)
#   MINIDECODE_INSTRUCTORS     comma-separated instructor names ("instructor")
#   MINIDECODE_STUDENTS        comma-separated student names ("")
#   MINIDECODE_HOMES           each user's server starts in HOMES/<name> (/srv/minidecode/home)
#   NBGRADER_EXCHANGE          the nbgrader exchange every server shares (/srv/nbgrader/exchange)
#
# Authentication and spawning are NOT set here: the test adds a DummyAuthenticator and a
# SimpleLocalProcessSpawner (one Unix user for everybody). A real course replaces them, e.g.
# c.JupyterHub.authenticator_class = "generic-oauth" (oauthenticator, the university's SSO) or
# "ltiauthenticator" (the learning platform), and c.JupyterHub.spawner_class = "kubespawner"
# (Zero to JupyterHub, deploy/z2jh-values.yaml) or "systemdspawner" (one machine, one Unix user
# per student, resource limits per server).
import os
import shutil
import sys
from pathlib import Path

c = get_config()  # noqa: F821  (JupyterHub defines it)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE = Path(os.environ.get("MINIDECODE_HUB_STATE", ".")).resolve()
PORT = int(os.environ.get("MINIDECODE_HUB_PORT", "8000"))
INSTRUCTORS = {n for n in os.environ.get("MINIDECODE_INSTRUCTORS", "instructor").split(",") if n}
STUDENTS = {n for n in os.environ.get("MINIDECODE_STUDENTS", "").split(",") if n}
HOMES = Path(os.environ.get("MINIDECODE_HOMES", "/srv/minidecode/home"))
EXCHANGE = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")

# Every process binds to the loopback interface: the hub, its internal API, the proxy and its
# API, and each single-user server.
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = PORT
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = PORT + 1
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PORT + 2}"
c.Spawner.ip = "127.0.0.1"
c.Spawner.port = 0  # a free port each

# configurable-http-proxy from npm: `npm install --prefix .hub configurable-http-proxy`.
local_proxy = REPO / ".hub" / "node_modules" / ".bin" / "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [
    str(local_proxy) if local_proxy.exists() else shutil.which("configurable-http-proxy")
    or "configurable-http-proxy"
]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")

# Users: instructors are hub admins; everybody else on the list is a student.
c.Authenticator.admin_users = INSTRUCTORS
c.Authenticator.allowed_users = INSTRUCTORS | STUDENTS
c.JupyterHub.load_groups = {
    "instructors": {"users": sorted(INSTRUCTORS)},
    "students": {"users": sorted(STUDENTS)},
}

# The single-user server is the project's own environment (the one running the hub), so the
# kernel imports minidecode, the shipped models and nbgrader's extensions.
venv_bin = Path(sys.executable).parent
c.Spawner.cmd = [str(venv_bin / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.http_timeout = 120  # a busy machine starts a server slowly
c.Spawner.start_timeout = 180
if os.getuid() == 0:
    c.Spawner.args = ["--allow-root"]  # containers and CI run as root


def _role(spawner) -> str:
    return "instructor" if spawner.user.name in INSTRUCTORS else "student"


c.Spawner.environment = {
    "NBGRADER_EXCHANGE": EXCHANGE,
    "MINIDECODE_ROLE": _role,
    # nbgrader's exchange settings for every user; the instructor's course folder adds its own.
    "JUPYTER_CONFIG_PATH": str(HERE),
    "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    "OMP_NUM_THREADS": "1",  # one core per student server; see the instructor's guide
}

# Idle servers are stopped after an hour (the jupyterhub-idle-culler service, if installed).
if shutil.which("jupyterhub-idle-culler", path=str(venv_bin)):
    c.JupyterHub.services = [{
        "name": "idle-culler",
        "command": [str(venv_bin / "jupyterhub-idle-culler"), "--timeout=3600"],
    }]
    c.JupyterHub.load_roles = [{
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }]
