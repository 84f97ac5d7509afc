"""Grading submitted notebooks (``workbook grade``): its own trust boundary and its own user.

The instructor runs it on code they did not write. ``sandbox`` builds the operating-system
sandbox and its limits, ``guard`` is the in-kernel write guard, ``suites`` holds each lab's
check suite (its hidden checks never reach a graded kernel's package copy), ``grade`` runs a
notebook and its checks, ``gradebook`` turns what was found into reports and tables, and
``timing`` measures how long grading takes (a benchmark, not a test).
"""
