# nbgrader settings every user's server reads (on JUPYTER_CONFIG_PATH, set by the hub): the course
# and the shared exchange. The instructor's course folder has its own nbgrader_config.py
# (python -m minidecode.course nbgrader COURSE_DIR), which adds the course's root and time limit.
import os

c = get_config()  # noqa: F821  (nbgrader defines it)

c.CourseDirectory.course_id = "minidecode"
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
c.ExchangeSubmit.strict = True  # a submission must hold the assignment's notebooks by name

# nbgrader names a submission after the Unix user, or JUPYTERHUB_USER when that user is `jovyan`
# (Zero to JupyterHub's images). When every server runs as one Unix user (a one-machine trial with
# SimpleLocalProcessSpawner), the hub's user name must say who submits.
user = os.environ.get("JUPYTERHUB_USER")
if user and os.environ.get("MINIDECODE_ROLE") == "student":
    c.CourseDirectory.student_id = user
