"""What the tests share: the repository root, tiny models, synthetic results, the smoke workflow, the
local SLURM cluster and the reference MLQA scorer (imported as ``support.<module>``; ``pythonpath``
in pyproject.toml puts ``tests/`` on the path)."""
from pathlib import Path

#: The repository root (``tests/support/`` is two folders below it).
REPO_ROOT = Path(__file__).resolve().parents[2]
