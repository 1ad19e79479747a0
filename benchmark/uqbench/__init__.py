"""uqbench: cardiac MRI segmentation, uncertainty and local failure detection, scored on one protocol.

A plugin needs only ``import uqbench``: the hook marker and every contract and value type are here.
"""

from uqbench.api import (
    MOMENTS,
    Case,
    Context,
    Dataset,
    Detector,
    DetectorExample,
    Forward,
    Loss,
    MomentMap,
    Moments,
    Profile,
    Recipe,
    Sampler,
    Segmenter,
    UncertaintyMap,
)
from uqbench.hookspecs import Register, hookimpl

__version__ = "0.1.0"
__all__ = [
    "MOMENTS",
    "Case",
    "Context",
    "Dataset",
    "Detector",
    "DetectorExample",
    "Forward",
    "Loss",
    "MomentMap",
    "Moments",
    "Profile",
    "Recipe",
    "Register",
    "Sampler",
    "Segmenter",
    "UncertaintyMap",
    "__version__",
    "hookimpl",
]
