"""UTMOS (the UTMOS22 strong learner), the reference's ``metrics/UTMOS.py``, without fairseq.

The reference builds UTMOS22's strong learner with fairseq (a wav2vec 2.0 base model fine-tuned
with a BLSTM head, data-domain and listener embeddings) and scores 16 kHz audio with the listener
288 of domain 0. fairseq cannot be installed beside this project's torch, so this module holds the
same network: wav2vec 2.0 base (a 7-layer convolutional feature encoder, then a 12-layer post-norm
transformer), the two fixed embeddings, a BLSTM and a two-layer projection; frame scores are
averaged, times 2 plus 3. The parameter names are those of SpeechMOS's conversion of the official
checkpoint (``utmos22_strong_step7459_v1.pt``), so that file loads strictly.
``tests/vocos_core/training/test_utmos.py`` compares this module with SpeechMOS's on a fixture
computed in the reference venv.

Weights: that file, in torch hub's checkpoint folder (where ``torch.hub.load("tarepan/SpeechMOS:v1.2.0",
"utmos22_strong")`` leaves it) or given as a path. Nothing is downloaded.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000  # wav2vec 2.0's rate
WEIGHTS_FILE = "utmos22_strong_step7459_v1.pt"
# (channels, kernel, stride) of the feature encoder's convolutions: 320 samples (20 ms) per frame.
CONV_LAYERS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
FEAT, FFN, HEADS, LAYERS = 768, 3072, 12, 12  # the base transformer
POS_KERNEL, POS_GROUPS = 128, 16  # the convolutional relative position embedding
DOMAIN_DIM, JUDGE_DIM, RNN_DIM, PROJ_DIM = 128, 128, 512, 2048  # UTMOS22's head


class ConvFeatureExtractionModel(nn.Module):
    """Audio ``(B, S)`` -> features ``(B, 512, S // 320)`` (roughly): conv, GroupNorm on the first, GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_ch = 1
        for i, (ch, kernel, stride) in enumerate(CONV_LAYERS):
            # Index 1 held a Dropout(0) in fairseq; kept so the parameter names match.
            block = [nn.Conv1d(in_ch, ch, kernel, stride=stride, bias=False), nn.Identity()]
            block += [nn.GroupNorm(ch, ch, affine=True)] if i == 0 else []
            self.conv_layers.append(nn.Sequential(*block, nn.GELU()))
            in_ch = ch

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio[:, None]  # (B, S) -> (B, 1, S)
        for conv in self.conv_layers:
            x = conv(x)
        return x


class WeightNormConv(nn.Module):
    """The position convolution under weight norm over the kernel axis (``weight_norm(dim=2)``):
    weight = weight_g * weight_v / ||weight_v||, the norm taken per kernel tap."""

    def __init__(self) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, POS_KERNEL))
        self.weight_v = nn.Parameter(torch.zeros(FEAT, FEAT // POS_GROUPS, POS_KERNEL))
        self.bias = nn.Parameter(torch.zeros(FEAT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        weight = self.weight_g * v / v.norm(dim=(0, 1), keepdim=True)
        return F.conv1d(x, weight, self.bias, padding=POS_KERNEL // 2, groups=POS_GROUPS)


class PositionConv(nn.Module):
    """``(B, 768, T)`` -> ``(B, 768, T)``: the even kernel's extra last frame is dropped ("SamePad")."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("0", WeightNormConv())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(getattr(self, "0")(x)[..., :-1])


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (fairseq's names)."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(FEAT, FEAT) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 768)`` -> ``(B, T, 768)``."""
        b, t, _ = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:
            return proj(x).view(b, t, HEADS, FEAT // HEADS).transpose(1, 2)  # -> (B, heads, T, 64)

        out = F.scaled_dot_product_attention(heads(self.q_proj), heads(self.k_proj), heads(self.v_proj))
        return self.out_proj(out.transpose(1, 2).reshape(b, t, FEAT))  # (B, heads, T, 64) -> (B, T, 768)


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: x = LN(x + attn(x)); x = LN(x + fc2(gelu(fc1(x))))."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = SelfAttention()
        self.fc1, self.fc2 = nn.Linear(FEAT, FFN), nn.Linear(FFN, FEAT)
        self.self_attn_layer_norm, self.final_layer_norm = nn.LayerNorm(FEAT), nn.LayerNorm(FEAT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class TransformerEncoder(nn.Module):
    """``(B, T, 768)`` -> ``(B, T, 768)``: add the position convolution, LayerNorm, 12 layers.

    fairseq pads T to a multiple of 2 with a masked frame; a masked key changes no other frame's
    attention, so this module does not pad."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_conv = PositionConv()
        self.layer_norm = nn.LayerNorm(FEAT)
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)  # conv over time: (B, T, C) <-> (B, C, T)
        x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        return x


class Wav2Vec2Model(nn.Module):
    """wav2vec 2.0 base: 16 kHz audio ``(B, S)`` -> frames ``(B, T, 768)``, 20 ms apart."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = ConvFeatureExtractionModel()
        self.layer_norm = nn.LayerNorm(CONV_LAYERS[-1][0])
        self.post_extract_proj = nn.Linear(CONV_LAYERS[-1][0], FEAT)
        self.encoder = TransformerEncoder()
        self.mask_emb = nn.Parameter(torch.zeros(FEAT))  # pre-training only; kept for strict loading

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        features = self.feature_extractor(audio).transpose(1, 2)  # (B, 512, T) -> (B, T, 512)
        return self.encoder(self.post_extract_proj(self.layer_norm(features)))


class UTMOS22Strong(nn.Module):
    """16 kHz audio ``(B, S)`` -> predicted MOS ``(B,)``, for domain 0 and listener 288 (their embeddings
    are the two fixed parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.wav2vec2 = Wav2Vec2Model()
        self.domain_emb = nn.Parameter(torch.zeros(1, DOMAIN_DIM), requires_grad=False)
        self.judge_emb = nn.Parameter(torch.zeros(1, JUDGE_DIM), requires_grad=False)
        self.blstm = nn.LSTM(FEAT + DOMAIN_DIM + JUDGE_DIM, RNN_DIM, batch_first=True, bidirectional=True)
        self.projection = nn.Sequential(nn.Linear(2 * RNN_DIM, PROJ_DIM), nn.ReLU(), nn.Linear(PROJ_DIM, 1))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        units = self.wav2vec2(audio)
        b, t, _ = units.shape
        # Each embedding (1, D) -> (1, 1, D) -> (B, T, D), beside every frame.
        conditions = [e[None].expand(b, t, -1) for e in (self.domain_emb, self.judge_emb)]
        frames = self.projection(self.blstm(torch.cat([units, *conditions], dim=2))[0])  # (B, T, 1)
        return frames.mean(dim=(1, 2)) * 2 + 3


def weights_folder() -> Path:
    """Torch hub's checkpoint folder, where the weight file is looked for."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def installed_weights() -> Path | None:
    """``utmos22_strong_step7459_v1.pt`` in :func:`weights_folder`, if it is there."""
    path = weights_folder() / WEIGHTS_FILE
    return path if path.is_file() else None


def load_utmos(weights: str | Path | None = None) -> UTMOS22Strong:
    """The network with ``weights`` (default: :func:`installed_weights`), in eval mode."""
    path = Path(weights) if weights is not None else installed_weights()
    if path is None or not path.is_file():
        where = f" at {path}" if path else f" in {weights_folder()}"
        raise FileNotFoundError(f"no UTMOS weights{where}: put SpeechMOS's {WEIGHTS_FILE} there "
                                "(torch.hub.load('tarepan/SpeechMOS:v1.2.0', 'utmos22_strong') on a machine online "
                                "leaves it there), or give the file's path")
    model = UTMOS22Strong()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


@functools.cache
def installed_utmos() -> UTMOS22Strong:
    """:func:`load_utmos` of the installed weights, loaded once per process."""
    return load_utmos()


def utmos_score(model: UTMOS22Strong, audio: torch.Tensor) -> float:
    """Mean predicted MOS of 16 kHz audio ``(B, S)``, as the reference's ``UTMOSScore.score(...).mean()``."""
    # float32 even under a bf16-mixed trainer's autocast: the score is a metric, compared across runs.
    with torch.inference_mode(), torch.autocast(audio.device.type, enabled=False):
        return float(model(audio.float()).mean())
