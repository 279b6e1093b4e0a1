"""archsim: similarity of neural architectures by adversarial attack transferability (SAT)."""

__version__ = "0.1.0"

from archsim.api import SatRun, run_sat  # noqa: E402
from archsim.data import load_data  # noqa: E402
from archsim.models import create_model  # noqa: E402

__all__ = ["run_sat", "SatRun", "load_data", "create_model", "__version__"]
