"""Segmenters: network factories with their training recipes (networks import torch lazily in build())."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from uqbench import Profile, Recipe, Register, Segmenter, hookimpl

# Paper V-A for DRN and U-Net: CE, Adam, batch 16, 128x128 patches, lr 1e-3 x0.1 every 25k steps, 100k steps.
# The paper states no weight decay value and no Adam variant; the authors' code (utils/trainers.py of
# toologicbv/cardiacSegUncertainty) trains with AMSGrad and weight decay 5e-4 under this step schedule.
PAPER_2D = Recipe(loss="ce", iterations=100_000, batch_size=16, patch_size=128, learning_rate=1e-3,
                  lr_decay_every=25_000, weight_decay=5e-4, amsgrad=True)
# CPU recipe (ours): an eighth of the channels, 96x96 patches, 800 steps (about 80 s a fold on 2 cores), plain
# Adam with weight decay 1e-4; half the patches centred on a labelled voxel, or so few steps never learn the RV
# on real ACDC.
QUICK_2D = Recipe(loss="ce", iterations=800, batch_size=8, patch_size=96, learning_rate=3e-3,
                  lr_decay_every=600, weight_decay=1e-4, width=0.125, foreground=0.5)
# `cpu` profile (ours): real ACDC on a 2-core CPU in at most 30 minutes a fold, train, MC predict and detector
# included. What was tried, and what each recipe measured, is in docs/cpu-recipes.md. DRN (its row 5): a quarter
# of the channels, the paper's 128 x 128 patches, batch 8, 16,000 steps, CE + soft Dice, lr 3e-3 decayed to zero
# (poly), a fifth of the patches turned (within +-15 degrees: the slices keep their orientation, no quarter turns)
# and scaled and 15 % given new intensities. lr_decay_every is unused under poly; it keeps the value the trials
# ran with, so their stored models serve the same recipe. unet and dn replace the step count (rows U9 and D10).
CPU_DRN = Recipe(loss="dice-ce", iterations=16_000, batch_size=8, patch_size=128, learning_rate=3e-3,
                 lr_decay_every=5_600, weight_decay=1e-4, width=0.25, foreground=0.5, schedule="poly",
                 spatial=0.2, intensity=0.15, max_turn=15.0)

DN_PLANS = ("paper", "authors")  # dn's layer plans (segmenters/dn.py docstring)


def check_dn_plan(plan: str) -> None:
    """ValueError naming the plan unless it is one of DN_PLANS (dn's plugin and its network both check)."""
    if plan not in DN_PLANS:
        raise ValueError(f"unknown dn plan {plan!r}; one of {', '.join(DN_PLANS)}")


class DRN:
    """Bayesian DRN-D-22 (Yu et al. 2017): output stride 8, dropout after every convolution."""

    name = "drn"
    size_multiple = 8

    def build(self, *, in_channels: int, num_classes: int, dropout: float, width: float = 1.0) -> Any:
        from uqbench_plugins.segmenters.drn import DRND22

        return DRND22(in_channels, num_classes, dropout, width=width)

    def recipe(self, profile: Profile) -> Recipe:
        return {Profile.PAPER: PAPER_2D, Profile.CPU: CPU_DRN}.get(profile, QUICK_2D)


class UNetSegmenter:
    """Bayesian U-Net (paper III-A): 64 to 1024 kernels, instance norm going down, dropout ending every block."""

    name = "unet"
    size_multiple = 16
    cache_version = 2  # 2: He-normal initialisation of its convolutions, as the authors' (unet.py docstring)
    # Instance norm reads the statistics of whatever it is given: predicted whole, a net trained on patches labels
    # far-off background LV (uqbench.infer.windows), so it is predicted in windows of its patch size. This changes
    # prediction alone, so the predict stage keys it and cache_version (which keys training too) stays.
    windowed = True

    def build(self, *, in_channels: int, num_classes: int, dropout: float, width: float = 1.0) -> Any:
        from uqbench_plugins.segmenters.unet import UNet

        return UNet(in_channels, num_classes, dropout, width=width)

    def recipe(self, profile: Profile) -> Recipe:
        if profile is Profile.CPU:  # DRN's at 3/16 of the channels and 7,000 steps (docs/cpu-recipes.md, row U9)
            return replace(CPU_DRN, width=0.1875, iterations=7_000)
        return PAPER_2D if profile is Profile.PAPER else QUICK_2D  # as DRN's (paper V-A)


class DN:
    """Bayesian dilated CNN (paper III-A): 8 unpadded dilated 3x3 layers, receptive field 131, two 1x1 layers.
    It reads 65 voxels of real image context around what it labels (``context``), as the authors pad their
    151 x 151 training samples to 281 x 281 with the surrounding image (utils/trainers.py: ``pad = 65``).
    ``dn:authors`` builds the authors' networks/dilatedcnn.py instead of the paper's text (dn.py docstring)."""

    name = "dn"
    size_multiple = 1
    context = 65
    # Its maps keep the slice's full size in every layer, so on a CPU a volume's worth in one call runs slower
    # than slice by slice: one input a call (docs/measurements.md, "one input a network call").
    cpu_inputs_per_call = 1

    def __init__(self, plan: str = "paper") -> None:
        check_dn_plan(plan)
        self.plan = plan

    def build(self, *, in_channels: int, num_classes: int, dropout: float, width: float = 1.0) -> Any:
        from uqbench_plugins.segmenters.dn import DilatedCNN

        return DilatedCNN(in_channels, num_classes, dropout, width=width, plan=self.plan)

    def recipe(self, profile: Profile) -> Recipe:
        if profile is Profile.PAPER:
            # Paper V-A: Brier loss, Adam, batch 16, 151x151 samples given 65 voxels of image context on each
            # side (281x281 inputs), snapshot schedule: lr reset to 0.02 every 10,000 of 100,000 steps; plain Adam
            # under this schedule as the authors' utils/trainers.py; weight decay ours.
            return Recipe(loss="brier", iterations=100_000, batch_size=16, patch_size=151, learning_rate=0.02,
                          lr_decay_every=10_000, weight_decay=1e-4, schedule="snapshot")
        if profile is Profile.CPU:
            # docs/cpu-recipes.md, rows D8 and D10: the paper's width, 64x64 samples, CE + soft Dice (beat Brier by
            # 0.028, row D3), lr 1e-2 decayed to zero, row 5's augmentation (rows D4, D10), and 6,000 steps: what
            # channels-last tensors buy in the time D4's 2,400 took. lr_decay_every is unused under poly (the
            # trials' value).
            return replace(CPU_DRN, iterations=6_000, patch_size=64, learning_rate=1e-2, lr_decay_every=900,
                           width=1.0)
        # CPU recipe: a quarter of the channels, 64x64 samples, 800 steps, half of them centred on a labelled voxel.
        return Recipe(loss="brier", iterations=800, batch_size=8, patch_size=64, learning_rate=3e-3,
                      lr_decay_every=400, weight_decay=1e-4, width=0.25, foreground=0.5, schedule="snapshot")


class SMP:
    """Any segmentation-models-pytorch architecture and encoder, e.g. smp:unet:resnet34 (MC dropout added)."""

    name = "smp"
    size_multiple = 32

    def __init__(self, arch: str = "unet", encoder: str = "resnet34", weights: str | None = None) -> None:
        import segmentation_models_pytorch as smp
        from segmentation_models_pytorch.encoders import get_encoder_names

        archs = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
        if arch.lower() not in archs:
            raise ValueError(f"unknown architecture {arch!r}; smp has {', '.join(archs)}")
        if encoder.startswith("tu-"):
            import timm

            if encoder[3:] not in timm.list_models():
                raise ValueError(f"unknown timm encoder {encoder[3:]!r}")
        elif encoder not in get_encoder_names():
            raise ValueError(f"unknown encoder {encoder!r} (timm encoders are named tu-<name>)")
        if weights is not None and not Path(weights).is_file():
            raise ValueError(f"encoder weights {weights}: no such file (weights are never downloaded)")
        self.arch, self.encoder, self.weights = arch.lower(), encoder, None if weights is None else Path(weights)

    def build(self, *, in_channels: int, num_classes: int, dropout: float, width: float = 1.0) -> Any:
        from uqbench_plugins.segmenters.smp import build

        if width != 1.0:
            raise ValueError("smp models have no width multiplier; use a smaller encoder instead")
        return build(self.arch, self.encoder, self.weights, in_channels=in_channels, num_classes=num_classes,
                     dropout=dropout)

    def recipe(self, profile: Profile) -> Recipe:
        # the paper's DRN/U-Net recipe; on CPU full width (smp has no width) and a gentler learning rate
        if profile is Profile.CPU:  # quick's patches and rate, as many steps as 20 minutes allow
            return replace(QUICK_2D, iterations=1_800, lr_decay_every=1_350, learning_rate=1e-3, width=1.0)
        return PAPER_2D if profile is Profile.PAPER else replace(QUICK_2D, learning_rate=1e-3, width=1.0)


@hookimpl
def register_segmenters(register: Register[Segmenter]) -> None:
    register(DRN)
    register(DN)
    register(SMP)
    register(UNetSegmenter)
