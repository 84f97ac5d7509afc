"""Grading submitted notebooks (``workbook grade``): the instructor's trust boundary.

The instructor runs it on code they did not write. ``sandbox`` builds the operating-system
sandbox and its limits, ``guard`` is the in-kernel write guard, ``suites`` holds each lab's
check suite (its hidden checks never reach a graded kernel, which gets a copy of ``shared``
only), ``grade`` runs a notebook and its checks, ``gradebook`` turns what was found into
reports and tables, and ``timing`` measures how long grading takes (a benchmark, not a test).

Only the command (``workbook.cli``) and the benchmark (``workbook.bench``) import this
package; the lab generator is handed the suites' points by the command (``make lint``).
"""
