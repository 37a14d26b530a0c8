"""The Vocos model: feature extractor -> backbone -> head, loaded from an official checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from . import inputs, streaming
from .checkpoint import load_strict, read_state_dict, resolve_checkpoint
from .config import HiFiGANMelSpectrogramFeaturesConfig, MelSpectrogramFeaturesConfig, VocosConfig, load_config
from .errors import CheckpointError, InputError
from .feature_extractors import (
    ENCODEC_BINS,
    EncodecFeatures,
    MelSpectrogramFeatures,
    codebooks_for_bandwidth,
    spectrogram_steps,
)
from .heads import build_head
from .hifigan_mel import HiFiGANMelSpectrogramFeatures
from .models import build_backbone
from .packing import Packing
from .spectral_ops import min_stft_samples
from .steps import Steps, run_steps
from .streaming import Lookahead, VocosStream


class Vocos(nn.Module):
    """Vocos vocoder with the reference package's API (``decode``, ``forward``, ``codes_to_features``).

    ``Vocos.from_pretrained("charactr/vocos-mel-24khz")`` (or a local directory), then
    ``decode(mel)`` ``(B, 100, T)`` -> ``(B, S)``; an EnCodec model takes
    ``decode(codes_to_features(codes), bandwidth_id=torch.tensor([2]))`` and ``model(audio, bandwidth_id=2)``.
    Inputs may be on the CPU and of any float dtype; the outputs are on the model's device.
    Adds :meth:`decode_batch`, which runs items of unequal lengths in one batch and gives each
    exactly its unbatched output. Bad input raises :class:`~vocos_core.InputError`, a bad
    checkpoint :class:`~vocos_core.CheckpointError`, each saying what was expected.
    """

    def __init__(self, config: VocosConfig, encodec_weights: str | os.PathLike[str] | None = None) -> None:
        """A model of ``config`` (:func:`vocos_core.config.load_config`) with untrained weights, in eval
        mode; :meth:`from_pretrained` loads trained ones, :meth:`from_hparams` reads a ``config.yaml``."""
        super().__init__()
        self.config = config
        fe = config.feature_extractor
        self.feature_extractor: MelSpectrogramFeatures | HiFiGANMelSpectrogramFeatures | EncodecFeatures
        if isinstance(fe, MelSpectrogramFeaturesConfig):
            self.feature_extractor = MelSpectrogramFeatures(fe)
        elif isinstance(fe, HiFiGANMelSpectrogramFeaturesConfig):
            self.feature_extractor = HiFiGANMelSpectrogramFeatures(fe)
        else:
            self.feature_extractor = EncodecFeatures(fe, encodec_weights)
        self.backbone = build_backbone(config.backbone)
        self.head = build_head(config.head)
        self.eval()

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_hparams(cls, config_path: str | os.PathLike[str],
                     encodec_weights: str | os.PathLike[str] | None = None) -> Vocos:
        """A model with the architecture of ``config_path`` and untrained weights."""
        config = load_config(Path(config_path))
        try:
            return cls(config, encodec_weights)
        except (RuntimeError, MemoryError) as exc:  # sizes no machine holds (an n_fft of 10**8): torch's alloc
            raise CheckpointError(f"{config_path}: a model of this config cannot be built here "
                                  f"({' '.join(str(exc).split())[:200]}); are its sizes what was meant?") from exc

    @classmethod
    def from_pretrained(cls, repo_id: str | os.PathLike[str], revision: str | None = None, *,
                        encodec_weights: str | os.PathLike[str] | None = None,
                        cache_dir: str | os.PathLike[str] | None = None,
                        local_files_only: bool = False) -> Vocos:
        """Load a Hub repo id (through the ``huggingface_hub`` cache) or a local checkpoint directory.

        ``encodec_weights``: the EnCodec 24 kHz checkpoint used only by the audio-in path of an
        EnCodec model; None means ``$VOCOS_ENCODEC_WEIGHTS`` or the official file via the torch hub cache.
        Raises :class:`~vocos_core.CheckpointError` naming the file and what it should hold (its
        subclass :class:`~vocos_core.UnavailableError` when a Hub file is not cached and cannot be fetched).
        """
        config_path, weights_path = resolve_checkpoint(repo_id, revision, cache_dir, local_files_only)
        model = cls.from_hparams(config_path, encodec_weights)
        load_strict(model, read_state_dict(Path(weights_path)), Path(weights_path))
        return model.eval()

    # -- properties ------------------------------------------------------------------------------

    @property
    def kind(self) -> Literal["mel", "encodec"]:
        """What :meth:`decode` takes: log-mel spectrograms, or EnCodec embeddings (:meth:`codes_to_features`)."""
        return "encodec" if isinstance(self.feature_extractor, EncodecFeatures) else "mel"

    @property
    def sample_rate(self) -> int:
        """Rate of the audio in and out, in Hz."""
        return self.config.feature_extractor.sample_rate

    @property
    def hop_length(self) -> int:
        """Audio samples per feature frame."""
        return self.num_samples(2) - self.num_samples(1)

    @property
    def n_features(self) -> int:
        """Channels C of the features :meth:`decode` takes (n_mels; 128 for EnCodec)."""
        return self.config.backbone.input_channels

    @property
    def bandwidths(self) -> tuple[float, ...]:
        """EnCodec bandwidths in kbps, indexed by ``bandwidth_id``; empty for a mel model."""
        fe = self.feature_extractor
        return fe.bandwidths if isinstance(fe, EncodecFeatures) else ()

    def num_codebooks(self, bandwidth_id: int) -> int:
        """EnCodec codebooks at a bandwidth id (0..3 -> 2/4/8/16 for the official model)."""
        return codebooks_for_bandwidth(self.bandwidths[inputs.one_bandwidth_id(bandwidth_id,
                                                                              self._require_encodec().bandwidths)])

    def num_samples(self, frames: int) -> int:
        """Output samples for ``frames`` feature frames."""
        return self.head.num_samples(frames)

    def min_audio_samples(self) -> int:
        """Shortest audio the feature extractor accepts (reflect padding needs more samples than it pads, and
        the padded audio one whole window)."""
        fe = self.config.feature_extractor
        if isinstance(fe, (MelSpectrogramFeaturesConfig, HiFiGANMelSpectrogramFeaturesConfig)):
            return min_stft_samples(fe.n_fft, fe.hop_length, fe.padding)
        return 1

    @property
    def lookahead(self) -> Lookahead:
        """Frames (and ms of audio) a stream must be fed beyond a sample for that sample to be exact."""
        return streaming.lookahead(self)

    def stream(self, bandwidth_id: int | None = None, lookahead_frames: int | None = None) -> VocosStream:
        """A streaming decoder: ``push`` frames ``(C, t)`` as they arrive, ``flush`` at the end; the
        pieces concatenated equal :meth:`decode` of all frames. EnCodec models take ``push_codes`` too.

        ``lookahead_frames`` below :attr:`lookahead`'s frames: a low-latency stream, whose audio is out
        that many frames behind its input instead, and is then not exact (see
        :func:`vocos_core.streaming.decode_steps`; its error is measured in docs/streaming.md)."""
        return VocosStream(self, bandwidth_id, lookahead_frames)

    # -- inference -------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, audio_input: torch.Tensor, bandwidth_id: torch.Tensor | int | None = None) -> torch.Tensor:
        """Copy-synthesis: audio ``(B, S)`` or ``(S,)`` at the model's rate -> ``(B, S')`` (B = 1 for ``(S,)``)."""
        return self.decode(self.audio_to_features(audio_input, bandwidth_id), bandwidth_id=bandwidth_id)

    @torch.inference_mode()
    def decode(self, features_input: torch.Tensor, bandwidth_id: torch.Tensor | int | None = None) -> torch.Tensor:
        """``(B, C, T)`` features -> ``(B, S)`` audio, S = ``num_samples(T)``."""
        x = inputs.check_features(features_input, self.n_features, dtype=self._dtype())
        ids = self._bandwidth_ids(bandwidth_id, x.shape[0])
        # CPU features to a GPU model, as forward, decode_batch and codes_to_features take them.
        hidden = self.backbone(x.to(self._device(), self._dtype()), bandwidth_id=ids)
        audio = self.head(hidden)
        assert isinstance(audio, torch.Tensor)
        return audio

    @torch.inference_mode()
    def decode_batch(self, features: Iterable[torch.Tensor],
                     bandwidth_ids: Sequence[int] | torch.Tensor | int | None = None) -> list[torch.Tensor]:
        """Decode items of unequal lengths together: ``[(C, T_i)]`` -> ``[(S_i,)]``.

        Item i equals ``decode(features[i][None], bandwidth_ids[i])[0]``: the backbone sees the items
        end to end, zeros between them masked before every convolution; the head sees them padded,
        padded frames left out of each item's overlap-add normalisation.
        """
        items = inputs.check_feature_list(features, self.n_features, self._dtype())
        ids = self._bandwidth_ids(bandwidth_ids, len(items))
        lengths = [x.shape[-1] for x in items]
        # The backbone runs the items end to end, with no padding (see vocos_core.packing); the
        # head, whose overlap-add must not cross items, runs them padded, with their lengths.
        packing = Packing.of(lengths, gap=self.backbone.reach)
        packed = packing.pack([x.to(self._device(), self._dtype()) for x in items])
        if ids is not None and ids.numel() > 1:
            ids = packing.per_frame(ids)
        hidden = self.backbone(packed, bandwidth_id=ids, mask=packing.mask(packed.device))
        audio = self.head(packing.unpack(hidden), torch.tensor(lengths))
        assert isinstance(audio, list)
        return audio

    @torch.inference_mode()
    def codes_to_features(self, codes: torch.Tensor) -> torch.Tensor:
        """EnCodec codes ``(K, L)`` or ``(K, B, L)`` -> features ``(B, 128, L)``."""
        fe = self._require_encodec()
        codes = inputs.check_codes(codes, fe.num_q, ENCODEC_BINS)
        return fe.codes_to_features(codes.to(fe.codebook_weights.device).long())

    @torch.inference_mode()
    def decode_codes(self, codes: torch.Tensor, bandwidth_id: torch.Tensor | int | None = None) -> torch.Tensor:
        """Codes ``(K, L)`` or ``(K, B, L)`` -> ``(B, S)``; the bandwidth is inferred from K when not given.

        ``(K, B, L)`` is the reference's layout; EnCodec's ``encode`` gives ``(B, K, L)``: pass
        ``codes.transpose(0, 1)``. Where B is itself a codebook count (2, 4, 8, 16) nothing can tell the two
        apart, so give ``bandwidth_id`` to have a swapped grid refused."""
        fe = self._require_encodec()
        checked = inputs.check_codes(codes, fe.num_q, ENCODEC_BINS)
        k = checked.shape[0]
        counts = [codebooks_for_bandwidth(b) for b in fe.bandwidths]
        # A 3-D grid whose items' dim holds a codebook count is likely EnCodec's (B, K, L): say so in any refusal.
        layout = (" (codes are (K, B, L); EnCodec's encode gives (B, K, L): pass codes.transpose(0, 1))"
                  if codes.dim() == 3 and checked.shape[1] in counts else "")
        if bandwidth_id is None:
            bandwidth_id = self.bandwidth_id_for_codebooks(k, hint=layout)
        else:
            bandwidth_id = inputs.one_bandwidth_id(bandwidth_id, fe.bandwidths)
            if counts[bandwidth_id] != k:
                raise InputError(f"codes: bandwidth id {bandwidth_id} ({fe.bandwidths[bandwidth_id]:g} kbps) uses "
                                 f"{counts[bandwidth_id]} codebooks, got {k}{layout}")
        return self.decode(self.codes_to_features(checked), bandwidth_id=bandwidth_id)

    def bandwidth_id_for_codebooks(self, k: int, hint: str = "") -> int:
        """The bandwidth id whose codebook count is ``k``; InputError listing valid counts otherwise (``hint``
        appended)."""
        counts = [codebooks_for_bandwidth(b) for b in self._require_encodec().bandwidths]
        if k not in counts:
            raise InputError(f"codes: {k} codebooks match no bandwidth; valid codebook counts: {counts}{hint}")
        return counts.index(k)

    @torch.inference_mode()
    def audio_to_features(self, audio_input: torch.Tensor,
                          bandwidth_id: torch.Tensor | int | None = None) -> torch.Tensor:
        """Audio ``(B, S)`` or ``(S,)`` at the model's rate -> features ``(B, C, T)`` (B = 1 for ``(S,)``):
        the log-mel spectrogram, or the EnCodec embeddings at ``bandwidth_id`` (one id for the batch).

        The features of :meth:`forward`, which is ``decode(audio_to_features(audio, id), id)``.
        """
        return run_steps(self.audio_to_features_steps(audio_input, bandwidth_id))

    def audio_to_features_steps(self, audio_input: torch.Tensor,
                                bandwidth_id: torch.Tensor | int | None = None) -> Steps:
        """:meth:`audio_to_features` as :data:`~vocos_core.steps.Steps`, to run a few units at a time
        (:func:`~vocos_core.steps.advance`) in inference mode, each piece of the features ``(B, C, t)``
        out as soon as it is final; the arguments are checked at once.

        The EnCodec encoder's units are its layers on chunks of 32000 samples (a piece per span of 4
        chunks); a mel spectrogram's are its frames, 2048 at a time.
        """
        with torch.inference_mode():
            audio = inputs.check_audio(audio_input, self.min_audio_samples())
            audio = (audio if audio.dim() == 2 else audio.unsqueeze(0)).float().to(self._device())
        if isinstance(self.feature_extractor, EncodecFeatures):
            ids = inputs.check_bandwidth_ids(bandwidth_id, self.bandwidths, audio.shape[0])
            if ids.numel() != 1:
                raise InputError("bandwidth_id: the audio path takes one bandwidth id for the whole batch")
            return self.feature_extractor.steps(audio, int(ids))
        cfg = self.feature_extractor.config
        return spectrogram_steps(self.feature_extractor, audio, cfg.n_fft, cfg.hop_length)

    # -- helpers ---------------------------------------------------------------------------------

    def _bandwidth_ids(self, ids: object, batch: int) -> torch.Tensor | None:
        if not getattr(self.backbone, "adanorm", False):
            return None  # unconditioned backbone: a given id is ignored, as in the reference
        return inputs.check_bandwidth_ids(ids, self.bandwidths, batch).to(self._device())

    def _require_encodec(self) -> EncodecFeatures:
        if not isinstance(self.feature_extractor, EncodecFeatures):
            raise InputError("this is a mel model; EnCodec codes need an EnCodec model (vocos-encodec-24khz)")
        return self.feature_extractor

    def _device(self) -> torch.device:
        return self.head.out.weight.device

    def _dtype(self) -> torch.dtype:
        return self.head.out.weight.dtype
