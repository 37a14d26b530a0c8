"""Time one training batch's parts on this machine: the generator's step without the GAN (mel loss,
plus the phase loss if the config sets it), and a forward plus backward pass of each
discriminator, for a config's model (docs/training.md, the demo run).

    python scripts/training_step_cost.py [--config vocos_core/training/configs/demo-mel-24khz.yaml]
                                         [--batch 8] [--samples 8192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import yaml

from vocos_core.training.experiment import VocosExp


def seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up: first-call allocations and kernel choices
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="vocos_core/training/configs/demo-mel-24khz.yaml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with open(args.config, encoding="utf-8") as f:
        model = VocosExp(**yaml.safe_load(f)["model"])
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(args.batch, args.samples)

    def mel_step() -> None:  # the training step's generator loss, as while pretrain_mel_steps last
        model.generator_loss(audio, model.train_bandwidth_id(), gan=False)[0].backward()

    def disc_pass(disc: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            real, fake, _, _ = disc(audio, model(audio).detach())
            (sum(x.mean() for x in real) + sum(x.mean() for x in fake)).backward()
        return step

    print(f"{args.config}: batch {args.batch} x {args.samples} samples, {torch.get_num_threads()} threads")
    print(f"  generator step without the GAN (forward + backward): {seconds(mel_step, args.repeats):.3f} s")
    for name in ("multiperioddisc", "multiresddisc"):
        print(f"  {name} forward + backward: {seconds(disc_pass(getattr(model, name)), args.repeats):.3f} s")


if __name__ == "__main__":
    main()
