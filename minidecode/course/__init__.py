"""The course machinery: everything that turns the chapters into a course, none of it an algorithm.

- :mod:`~minidecode.course.grading`: ``python -m minidecode grade NOTEBOOK`` runs a student's
  notebook and checks each exercise against the package's own function;
- :mod:`~minidecode.course.checks`: one module a chapter, the exercises' cases;
- :mod:`~minidecode.course.exercises`: builds ``exercises/`` from ``solutions/``;
- :mod:`~minidecode.course.doctor`: what is installed and usable (for bug reports);
- :mod:`~minidecode.course.tour`: chapter 0's helpers.
"""
