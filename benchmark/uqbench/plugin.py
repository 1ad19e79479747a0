"""The core's helpers a plugin may use, beside the contracts and value types in ``uqbench``.

This module, ``uqbench`` itself, ``uqbench.hookspecs``, ``uqbench.testing`` (for a plugin's tests) and the pure
protocol functions in ``uqbench.protocol`` are uqbench's public API: they change only with a note in
CHANGELOG.md. Every other module is internal and may change in any release; uqbench's own built-in methods import
nothing else either (tests/test_public_api.py checks it).

- the label and patch grid: ``NUM_CLASSES``, ``CLASS_NAMES``, ``PHASES``, ``GROUPS``, ``PATCH``, and
  :func:`grid_shape`, :func:`patch_max`, :func:`patch_mean`, :func:`expand` for the 8 x 8 patches a detector scores;
- reading data: :func:`read_nifti` (a [Z, Y, X] array, its spacing and affine; DataError naming a bad file), the
  ACDC layout (:func:`acdc_patient_dirs`, :func:`acdc_cases`, :func:`acdc_problems`, :func:`acdc_fingerprint`),
  one case from an image and label file in any layout (:func:`read_case_files`), case names outside the ACDC
  layout (:func:`case_names`: ``patientNNN_frameFF`` or ``patientNNN_ED``) and the committed 4-fold split
  (:func:`acdc_folds`, :func:`acdc_groups`);
- errors a method raises for bad input: ``DataError`` (a bad file or folder), ``UsageError`` (a bad argument);
- resumable training for a trained detector: :func:`save_checkpoint` and :func:`resume_checkpoint`, the helpers
  the harness's own training loop uses; :func:`save_torch` writes any torch state so that a full disk is an
  OSError naming the file (blamed on the machine, not on the method) and a crash leaves no half-written file.
"""

from __future__ import annotations

from uqbench.api import CLASS_NAMES, GROUPS, NUM_CLASSES, PATCH, PHASES
from uqbench.data.folds import acdc_folds, acdc_groups
from uqbench.data.layout import fingerprint as acdc_fingerprint
from uqbench.data.layout import iter_cases as acdc_cases
from uqbench.data.layout import patient_dirs as acdc_patient_dirs
from uqbench.data.layout import problems as acdc_problems
from uqbench.data.layout import read_pair as read_case_files
from uqbench.data.naming import phases as case_names
from uqbench.data.nifti import read as read_nifti
from uqbench.errors import DataError, UsageError
from uqbench.protocol.patches import expand, grid_shape, patch_max, patch_mean
from uqbench.train.checkpoint import resume as resume_checkpoint
from uqbench.train.checkpoint import save as save_checkpoint
from uqbench.train.checkpoint import save_torch

__all__ = [
    "CLASS_NAMES",
    "GROUPS",
    "NUM_CLASSES",
    "PATCH",
    "PHASES",
    "DataError",
    "UsageError",
    "acdc_cases",
    "acdc_fingerprint",
    "acdc_folds",
    "acdc_groups",
    "acdc_patient_dirs",
    "acdc_problems",
    "case_names",
    "expand",
    "grid_shape",
    "patch_max",
    "patch_mean",
    "read_case_files",
    "read_nifti",
    "resume_checkpoint",
    "save_checkpoint",
    "save_torch",
]
