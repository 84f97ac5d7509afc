"""The learners' library: what the course's notebooks and DAGs import, and nothing else.

The rule for what lives here: a module belongs in ``shared`` when a notebook (a learner's
lab or its solution) or a DAG in ``dags/`` imports it. Everything only the ``workbook``
command, the tests, the instructor or the maintainers use lives in the ``workbook`` package
(the instructors' toolkit), which may import this one; this one never imports it
(``make lint`` checks that with import-linter).

Read it in layers, bottom up: ``paths`` and ``io`` (where things live, atomic writes);
``config``, ``provision``, ``data`` and ``model``; ``train`` and ``plots``;
``speedrun`` and ``airflow_local``; then ``pipeline``, ``checks`` and ``experiments``, which
the DAGs and the notebooks call.

Importing it does no work: no folders are made, no data is fetched and no logging is set
up. Submodules are imported where they are used (``from shared import config``), so a DAG
file that only needs paths does not pay for torch.
"""

__version__ = "0.1.0"
