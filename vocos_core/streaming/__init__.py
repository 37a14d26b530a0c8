"""Exact streaming decode: audio out while feature frames still arrive, many streams per batched call."""

from .stream import Lookahead, StreamState, VocosStream, check_lookahead_frames, decode_steps, lookahead

__all__ = ["Lookahead", "StreamState", "VocosStream", "check_lookahead_frames", "decode_steps", "lookahead"]
