"""Make the test jobs module importable here, as the worker subprocesses import it
(they get this folder on PYTHONPATH): pytest runs with ``--import-mode=importlib``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
