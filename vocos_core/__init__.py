"""vocos_core: checkpoint-compatible Vocos inference with exact batching, no torchaudio at run time."""

from .errors import CheckpointError, InputError, UnavailableError, UnsupportedError, VocosError
from .pretrained import Vocos

__all__ = ["CheckpointError", "InputError", "UnavailableError", "UnsupportedError", "Vocos", "VocosError"]
__version__ = "0.1.0"
