"""Which segmentation errors are failures an expert must correct (paper section V-B), as named,
versioned parameter sets.

Everything is computed per 2-D slice in the 1.4 mm grid, per class c in {RV, MYO, LV}, against the
reference. Slice order: z = 0 is the base, the highest slice holding reference labels is the apex
(true of all 200 ACDC training volumes).

Distance to the boundary, both presets (the authors' `compute_slice_distance_transform_for_structure` in
datasets/ACDC/detection/distance_transforms.py of toologicbv/cardiacSegUncertainty): the *contour* of c in a
slice is the set of voxels of c with a 4-neighbour that is not c (outside the image counts as not c); an error
voxel's distance is the in-plane Euclidean distance to the nearest contour voxel, inside c as well as outside.
A contour voxel is at distance 0, so it is always tolerated.

``paper`` (the text of section V-B):

1. error voxels of c: where (prediction == c) differs from (reference == c);
2. tolerated: an error outside c within 3 voxels of the contour (distance <= 3), or inside c within 2 voxels
   of it (distance <= 2); where c is absent from the reference slice nothing is tolerated;
3. a non-tolerated error voxel is a failure when its 4-connected cluster of error voxels of c (tolerated
   ones included) has at least 10 voxels;
4. in the most apical labelled slice, non-tolerated errors are failures whatever the cluster size;
5. in slices with no reference label of any class (above the base, below the apex) every error voxel
   is a failure;
6. a voxel's failure label is the OR over classes.

``seed-code`` (the authors' released code: `generate_adjusted_dt_map` and `FilterSegErrors` in the same file):
distances in mm at the grid's in-plane spacing, margins 4.6 mm outside and 3.1 mm inside, and the authors'
integer storage: they keep distance-minus-margin in an integer array, truncated toward zero, so a voxel is
beyond tolerance only when its distance exceeds the margin by at least 1 mm; a whole 4-connected error
component, tolerated voxels included, is a failure when it has at least 10 voxels and at least one voxel beyond
tolerance; in the apical slice the distance rule is dropped (every error is beyond tolerance) and the minimum
component size is 15; where c is absent from the reference slice (so in every unlabelled slice too) all its
errors are beyond tolerance and the size rule still applies.

A :class:`FailureRule` holds every choice; its ``digest()`` (with ``DEFINITION_VERSION``, bumped whenever
this code changes what a parameter means: 2 since the distance is to the contour on both sides) is recorded
in every result so numbers made under different definitions are never compared by accident.

Speed: the whole volume is done at once per class: one 3-D distance transform of the contour whose
through-plane step is too long to matter gives every slice's in-plane distances, bit for bit those of scipy's
per-slice transform the authors call; a 3-D labelling with no through-plane neighbours is a per-slice one. The
volume is first cropped to the in-plane bounding box of
all foreground grown by one voxel (the contour is taken there: a class voxel on the crop's edge is on the
image's edge), then each class to the box of its errors grown by the largest tolerance plus two (exact: every
contour voxel within tolerance of an error lies in it, and a cluster lies within the box of its errors).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from uqbench.protocol.metrics import FOREGROUND, bounding_box
from uqbench.records import fields_from_hashed

DEFINITION_VERSION = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureRule:
    """Every parameter of the failure definition; ``unit`` applies to ``outside`` and ``inside``."""

    name: str = "paper"
    outside: float = 3.0
    inside: float = 2.0
    unit: Literal["voxel", "mm"] = "voxel"
    truncate: bool = False  # beyond only when distance - margin >= 1 unit (the authors' integer storage)
    connectivity: Literal[4, 8] = 4
    min_cluster: int = 10
    mark: Literal["beyond", "component"] = "beyond"  # failure voxels of a qualifying cluster
    apical_tolerance: bool = True  # does the distance rule apply in the apical slice?
    apical_min_cluster: int = 1
    unlabelled: Literal["all-errors", "size-rule"] = "all-errors"  # slices with no reference label

    def __post_init__(self) -> None:
        if self.unit not in ("voxel", "mm") or self.connectivity not in (4, 8) \
                or self.mark not in ("beyond", "component") or self.unlabelled not in ("all-errors", "size-rule"):
            raise ValueError(f"failure rule {self.name!r}: unknown unit, connectivity, mark or unlabelled value")
        if min(self.outside, self.inside) < 0 or min(self.min_cluster, self.apical_min_cluster) < 1:
            raise ValueError(f"failure rule {self.name!r}: tolerances must be >= 0 and cluster sizes >= 1")

    def digest(self) -> str:
        """A stable hash of the definition (the name excluded: same rule, same hash)."""
        params = asdict(self)
        params.pop("name")
        blob = json.dumps({"definition": DEFINITION_VERSION, **params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def record(self) -> dict[str, object]:
        """The rule as results record it: its parameters, name and hash."""
        return asdict(self) | {"hash": self.digest(), "definition_version": DEFINITION_VERSION}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str = "failure_rule") -> FailureRule:
        """The rule a record describes; ValueError naming ``where`` when the record was written under another
        definition version or its hash does not match its parameters (edited by hand)."""
        rule: FailureRule = fields_from_hashed(cls, record, where, version=("definition_version", DEFINITION_VERSION),
                                               kind="rule", label=lambda r: r.name)
        return rule

    def step(self, spacing: float) -> float:
        """One voxel of a grid with in-plane ``spacing`` mm, in the rule's unit."""
        return spacing if self.unit == "mm" else 1.0

    def beyond(self, distance: np.ndarray, *, inside: np.ndarray) -> np.ndarray:
        """Whether a voxel at contour ``distance`` (rule's unit) is beyond tolerance, ``inside`` the structure
        or outside it; with ``truncate``, distance minus margin is first cut to an integer as the authors'
        integer arrays store it."""
        excess = distance - np.where(inside, self.inside, self.outside)
        return np.asarray((np.trunc(excess) if self.truncate else excess) > 0)

    def reach(self, spacing: float) -> int:
        """The largest in-plane distance, in voxels, at which a contour voxel can tolerate an error."""
        return int(np.floor((max(self.outside, self.inside) + 1) / self.step(spacing))) + 1


PAPER = FailureRule()
SEED_CODE = FailureRule(name="seed-code", outside=4.6, inside=3.1, unit="mm", truncate=True, mark="component",
                        apical_tolerance=False, apical_min_cluster=15, unlabelled="size-rule")
PRESETS = {r.name: r for r in (PAPER, SEED_CODE)}


def preset(name: str) -> FailureRule:
    """The named preset; ValueError listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown failure preset {name!r}: expected one of {', '.join(PRESETS)}") from None


def apex_index(ref: np.ndarray) -> int:
    """Index of the most apical slice holding reference labels (-1 when none does)."""
    labelled = np.flatnonzero(ref.reshape(ref.shape[0], -1).any(1))
    return int(labelled.max()) if labelled.size else -1


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Every slice, cropped in-plane to the box of ``mask`` (not empty) over all slices, grown by ``margin``."""
    yx = bounding_box(np.asarray(mask.any(0)), margin)
    assert yx is not None
    return (slice(None), *yx)


_CROSS = ndimage.generate_binary_structure(2, 1)[None]  # in-plane 4-neighbours, none through-plane


def contour(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` [Z, Y, X] with an in-plane 4-neighbour outside it (the image edge counts as outside)."""
    inner = ndimage.binary_erosion(mask, _CROSS, border_value=0)
    return np.asarray(mask & ~inner)


def _contour_distance(edge: np.ndarray, step: float) -> np.ndarray:
    """Each voxel's in-plane distance to the nearest ``edge`` voxel of its slice, ``step`` per voxel; infinite in
    a slice without one. One 3-D distance transform whose through-plane step is too long to ever be the nearest
    (an in-slice distance adds an exact 0.0 for z, so values equal scipy's per-slice transform bit for bit)."""
    if not edge.any():
        return np.full(edge.shape, np.inf)
    far = 2.0 * step * sum(edge.shape)  # longer than any in-plane distance
    dist = ndimage.distance_transform_edt(~edge, sampling=(far, step, step))
    has_edge = np.asarray(edge.reshape(edge.shape[0], -1).any(1))
    return np.where(has_edge[:, None, None], dist, np.inf)


def failure_map(pred: np.ndarray, ref: np.ndarray, *, rule: FailureRule = PAPER, spacing: float = 1.4
                ) -> np.ndarray:
    """Boolean failure voxels [Z, Y, X] of a predicted volume against its reference on one grid whose
    in-plane spacing is ``spacing`` mm (used only by rules in mm)."""
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape} (or is not 3-D)")
    out = np.zeros(ref.shape, dtype=bool)
    fg = (pred > 0) | (ref > 0)
    if not fg.any():
        return out
    box = _box(fg, 1)
    p, r = pred[box], ref[box]
    nz = r.shape[0]
    labelled = np.asarray(r.reshape(nz, -1).any(1))
    apex = apex_index(r)
    is_apex = (np.arange(nz) == apex)[:, None, None]
    step = rule.step(spacing)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1 if rule.connectivity == 4 else 2)
    min_size = np.where(is_apex, rule.apical_min_cluster, rule.min_cluster)
    margin = rule.reach(spacing) + 2  # every contour voxel that tolerates an error lies within the box
    fails = np.zeros(r.shape, dtype=bool)
    for c in FOREGROUND:
        err_all = (p == c) != (r == c)
        if not err_all.any():
            continue
        edge_all = contour(r == c)
        cbox = _box(err_all, margin)
        err, rc, edge = err_all[cbox], r[cbox] == c, edge_all[cbox]
        # where c is absent from the reference slice there is no contour: every error is beyond tolerance
        beyond = err & rule.beyond(_contour_distance(edge, step), inside=rc)
        if not rule.apical_tolerance:
            beyond |= err & is_apex
        comp, n = ndimage.label(err, structure)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        big = err & (sizes[comp] >= min_size)
        if rule.mark == "beyond":
            fails[cbox] |= beyond & big
        else:
            hit = np.bincount(comp[beyond], minlength=n + 1) > 0
            hit[0] = False
            fails[cbox] |= big & hit[comp]
    if rule.unlabelled == "all-errors":
        fails |= (p != r) & ~labelled[:, None, None]
    out[box] = fails
    return out
