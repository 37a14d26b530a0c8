"""Exact streaming decode: audio out while feature frames still arrive, many streams per batched call."""

from .stream import Lookahead, StreamState, VocosStream, decode_steps, lookahead

__all__ = ["Lookahead", "StreamState", "VocosStream", "decode_steps", "lookahead"]
