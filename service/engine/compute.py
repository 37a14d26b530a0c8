"""One whole-utterance model call, in the engine's worker thread, with its failure handling.

A ``ValueError`` of the batched call is pinned on its owner by running the items one by one; when
the device runs out of memory the batch is retried in halves, down to single requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from service.engine.errors import DeviceOutOfMemoryError, InvalidItemError

log = logging.getLogger(__name__)

# Outcome of one item of a model call: its output, or the exception that belongs to it alone.
Outcome = torch.Tensor | BaseException


class BatchModel(Protocol):
    """What the engine needs of a model: an exact batched call over inputs ``(C, T_i)``."""

    def decode_batch(
        self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
    ) -> list[torch.Tensor]: ...


def compute_batch(name: str, model: BatchModel, inputs: list[torch.Tensor], bandwidth_ids: list[int] | None,
                  retry_after: Callable[[], float]) -> list[Outcome]:
    """Run in the worker thread: the batched call, or item by item to pin a ValueError on its owner.

    When the device runs out of memory the batch is retried as two halves, down to single requests;
    a request that does not fit alone fails with ``DeviceOutOfMemoryError`` and the rest still run.
    """
    try:
        outputs = model.decode_batch(inputs, bandwidth_ids)
    except ValueError as exc:
        if len(inputs) == 1:
            return [InvalidItemError(str(exc))]
        return [compute_batch(name, model, [x], _pick(bandwidth_ids, i, i + 1), retry_after)[0]
                for i, x in enumerate(inputs)]
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        outputs = None  # retried below, after the exception and its frames' tensors are released
    if outputs is None:
        return _retry_in_halves(name, model, inputs, bandwidth_ids, retry_after)
    if len(outputs) != len(inputs):
        raise RuntimeError(f"decode_batch returned {len(outputs)} outputs for {len(inputs)} inputs")
    return list(outputs)


def _retry_in_halves(name: str, model: BatchModel, inputs: list[torch.Tensor], bandwidth_ids: list[int] | None,
                     retry_after: Callable[[], float]) -> list[Outcome]:
    release_cached_device_memory()
    frames = [int(x.shape[-1]) for x in inputs]
    if len(inputs) == 1:
        log.warning("%s: out of device memory for a single request of %d frames", name, frames[0])
        return [
            DeviceOutOfMemoryError(
                f"the {name} model ran out of device memory for this request alone ({frames[0]} "
                "frames); retry later or send it in shorter parts",
                retry_after(),
            )
        ]
    half = len(inputs) // 2
    log.warning("%s: out of device memory for a batch of %s frames; retrying it in two halves", name, frames)
    return compute_batch(name, model, inputs[:half], _pick(bandwidth_ids, 0, half), retry_after) + compute_batch(
        name, model, inputs[half:], _pick(bandwidth_ids, half, len(inputs)), retry_after
    )


def call_steps(name: str, decode_steps: Callable[..., list[torch.Tensor]], retry_after: Callable[[], float],
               *args: object) -> list[torch.Tensor]:
    """Run in the worker thread: one stream step, ``decode_steps(*args)``. Out of device memory it fails with
    ``DeviceOutOfMemoryError`` (a 503 with Retry-After, as a whole request's), the allocator's cache released.

    Not retried in halves as a batch is: a step advances its streams' states in place as it goes, so a step
    that failed midway leaves them unusable, and its streams end."""
    try:
        return decode_steps(*args)
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
    # Released here, after the exception and its frames' tensors are.
    release_cached_device_memory()
    log.warning("%s: out of device memory for a stream step", name)
    raise DeviceOutOfMemoryError(f"the {name} model ran out of device memory for this stream's step; "
                                 "open the stream again later", retry_after())


def _pick(bandwidth_ids: list[int] | None, start: int, stop: int) -> list[int] | None:
    return None if bandwidth_ids is None else bandwidth_ids[start:stop]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (the caching allocator's error, or the
    RuntimeError that cuBLAS/cuDNN workspace allocations raise)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def release_cached_device_memory() -> None:
    """Return the CUDA caching allocator's free blocks, so a retry can use them in another shape."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
