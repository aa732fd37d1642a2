"""``python -m minidecode.course nbgrader COURSE_DIR`` and ``... report COURSE_DIR chNN``:
see :mod:`minidecode.course.nbgrader`."""

from minidecode.course.nbgrader import main

if __name__ == "__main__":
    raise SystemExit(main())
