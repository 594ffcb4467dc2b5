"""pmc-harness: Partial Model Collapse and the harness core (data flow, training loop, sampling, run entry point)."""

from pathlib import Path

__version__ = "0.1.0"

# the Hydra config tree (conf/, beside the package), absolute so the command lines and pmc.pipeline find it however
# they are started (python -m, the console scripts, imported)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
