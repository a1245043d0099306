import os
import sys
from pathlib import Path

# as in stexture.cli: sleeping, not spinning, OpenMP threads (set before torch is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# tests import their shared helpers (shardfactory) as plain modules
sys.path.insert(0, str(Path(__file__).parent))
