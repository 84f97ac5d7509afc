"""The instructors' and maintainers' toolkit, named after its command: ``workbook``.

The rule for what lives here: everything the learners' notebooks and DAGs do not import.
The ``workbook`` command (``cli``), the lab generator (``labs``: the one reader of the
solution-marker grammar) and notebook cleaning (``notebooks``), the course website
(``site``), ``make demo`` (``demo``), the speed benchmark (``bench``), the distributed
Airflow (``cluster``, ``airflow_api``), and the grader (``grading``, the instructor's trust
boundary: only ``cli`` and ``bench`` import it).

It builds on the learners' library, ``shared``, and never the other way round: a graded
kernel gets a copy of ``shared`` only, so nothing here (the hidden suites, the grader)
reaches a submission. ``make lint`` checks these rules with import-linter.
"""
