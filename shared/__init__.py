"""The MLOps workbook's helper package: the code every notebook, DAG and CLI command shares.

Importing it does no work: no folders are made, no data is fetched and no logging is set up.
Submodules are imported where they are used (``from shared import config``), so a DAG file
that only needs paths does not pay for torch.
"""

__version__ = "0.1.0"
