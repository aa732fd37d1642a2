"""Reference cases for the graded exercises, one module per chapter: ``chNN.py`` for chapter NN.

A module declares each exercise with :func:`minidecode.course.grading.exercise` around a function
that yields seeded :class:`~minidecode.course.grading.Case` objects; ``check("NN.k", fn)`` and
``python -m
minidecode grade`` find every such exercise in ``minidecode.course.checks.chNN`` by itself. To add a
chapter's exercises, add ``chNN.py`` beside this file and nothing else.
"""
