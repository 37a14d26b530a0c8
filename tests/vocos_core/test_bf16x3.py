"""The bf16x3 linear kernels: accuracy, exact rows, any shape, weight changes, and when they apply."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from linear_helpers import layer, rel_error

from vocos_core import Vocos, bf16x3

# Error bound of one bf16x3 product against float64, relative to its largest output. Measured
# 3-4e-6 (float32: 4e-7); one bf16 product is ~3e-3.
ACCURACY = 1e-5

needs_kernels = pytest.mark.skipif(bf16x3.unsupported_reason() is not None,
                                   reason=f"bf16x3 kernels cannot run here: {bf16x3.unsupported_reason()}")


@pytest.fixture
def high() -> Iterator[None]:
    torch.set_float32_matmul_precision("high")
    with torch.no_grad():
        yield


@needs_kernels
@pytest.mark.usefixtures("high")
@pytest.mark.parametrize(("m", "k", "n"), [
    (938, 512, 1536), (938, 1536, 512), (1, 32, 32), (17, 48, 96), (33, 100, 1026), (2100, 64, 40),
])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_float64_for_any_shape(m: int, k: int, n: int, bias: bool) -> None:
    lin = layer(k, n, bias)
    x = torch.randn(m, k)
    out = bf16x3.linear(x, lin)
    assert out.shape == (m, n)
    assert rel_error(out, x, lin) <= ACCURACY
    # Not float32 in disguise: float32 is ~10x closer to float64 than bf16x3.
    assert not torch.equal(out, lin(x))


@needs_kernels
@pytest.mark.usefixtures("high")
def test_each_row_is_bit_identical_in_any_batch_and_thread_count() -> None:
    lin, x = layer(48, 96), torch.randn(70, 48)
    full = bf16x3.linear(x, lin)
    for rows in (slice(0, 1), slice(5, 22), slice(31, 70)):
        assert torch.equal(bf16x3.linear(x[rows], lin), full[rows])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(bf16x3.linear(x, lin), full)
    finally:
        torch.set_num_threads(threads)


@needs_kernels
@pytest.mark.usefixtures("high")
def test_writes_only_its_block_of_a_strided_output() -> None:
    lin, x = layer(64, 40), torch.randn(37, 64)
    wide = torch.full((37, 100), 7.0)
    bf16x3.linear_into(x, lin, wide[:, 30:70])
    assert torch.equal(wide[:, 30:70], bf16x3.linear(x, lin))
    assert bool((wide[:, :30] == 7.0).all()) and bool((wide[:, 70:] == 7.0).all())


@needs_kernels
@pytest.mark.usefixtures("high")
def test_changed_weights_are_split_again() -> None:
    lin, x = layer(32, 64), torch.randn(20, 32)
    bf16x3.linear(x, lin)
    with torch.no_grad():
        lin.weight.mul_(-2.0)
    assert rel_error(bf16x3.linear(x, lin), x, lin) <= ACCURACY
    lin.load_state_dict(layer(32, 64, seed=1).state_dict())
    assert rel_error(bf16x3.linear(x, lin), x, lin) <= ACCURACY
    assert "_bf16x3_pack" not in lin.state_dict()


@needs_kernels
@torch.no_grad()
def test_applies_only_to_float32_on_cpu_below_highest_precision() -> None:
    x = torch.randn(4, 32)
    assert not bf16x3.enabled_for(x)  # PyTorch's default, "highest"
    for precision in ("high", "medium"):
        torch.set_float32_matmul_precision(precision)
        assert bf16x3.enabled_for(x)
    assert not bf16x3.enabled_for(x.double())
    assert not bf16x3.enabled_for(x.bfloat16())


@needs_kernels
def test_autograd_keeps_pytorch_matmuls() -> None:
    torch.set_float32_matmul_precision("high")
    lin, x = layer(32, 64), torch.randn(3, 32)
    out = bf16x3.linear(x, lin)
    assert out.grad_fn is not None and torch.equal(out, lin(x))


def test_highest_precision_is_plain_float32() -> None:
    lin, x = layer(32, 64), torch.randn(3, 5, 32)
    assert torch.equal(bf16x3.linear(x, lin), lin(x))


def test_without_the_built_module_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bf16x3, "_bf16x3", None)
    monkeypatch.setattr(bf16x3, "_NOT_LOADED", "vocos_core._bf16x3 was not built (...)")
    reason = bf16x3.unsupported_reason()
    assert reason is not None and "not built" in reason
    torch.set_float32_matmul_precision("high")
    assert not bf16x3.enabled_for(torch.randn(2, 32))
    lin, x = layer(32, 64), torch.randn(2, 32)
    assert torch.equal(bf16x3.linear(x, lin), lin(x))


# Run in a child: the import happens once per process. The finder fails the module's import as Python does when
# the file is absent (ModuleNotFoundError naming it) and as the loader does when a library it links is missing.
REFUSE_IMPORT = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "vocos_core._bf16x3":
            raise {error}
sys.meta_path.insert(0, Refuse())
from vocos_core import bf16x3
print(bf16x3.unsupported_reason())
"""


@pytest.mark.parametrize(("error", "said"), [
    ("ModuleNotFoundError('No module named vocos_core._bf16x3', name='vocos_core._bf16x3')", "was not built"),
    ("ImportError('libgomp.so.1: cannot open shared object file: No such file or directory')",
     "was built but cannot be loaded: libgomp.so.1: cannot open shared object file"),
])
def test_a_module_that_does_not_load_says_why(error: str, said: str) -> None:
    """A module built but not loadable (an image without the OpenMP runtime it links) was called "not built"."""
    child = subprocess.run([sys.executable, "-c", REFUSE_IMPORT.format(error=error)], capture_output=True, text=True,
                           check=True)
    assert said in child.stdout, child.stdout


@needs_kernels
def test_a_decode_runs_each_mlp_and_the_head_through_the_kernels(monkeypatch: pytest.MonkeyPatch,
                                                                 mel_checkpoint: Path) -> None:
    model = Vocos.from_pretrained(mel_checkpoint)  # dim 32, intermediate 96, one ConvNeXt block
    real, widths = bf16x3._bf16x3, []

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def linear(self, *args: object) -> None:
            widths.append(args[7])  # n, the layer's output features
            real.linear(*args)

    monkeypatch.setattr(bf16x3, "_bf16x3", Counting())
    mel = torch.randn(1, 100, 50)
    reference = model.decode(mel)
    assert widths == []
    torch.set_float32_matmul_precision("high")
    audio = model.decode(mel)
    assert widths == [96, 32, 1026]  # pwconv1, pwconv2, the head's projection (n_fft + 2)
    assert float((audio - reference).abs().max() / reference.abs().max()) <= 1e-4
