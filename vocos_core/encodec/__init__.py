"""EnCodec 24 kHz encoder and residual vector quantizer (audio -> codes), loading the official weights."""

from __future__ import annotations

from .model import EncodecConfig, EncodecEncoder
from .weights import OFFICIAL_URL, load_encodec_encoder

__all__ = ["OFFICIAL_URL", "EncodecConfig", "EncodecEncoder", "load_encodec_encoder"]
