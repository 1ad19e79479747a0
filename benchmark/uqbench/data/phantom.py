"""A synthetic cardiac cine-MRI dataset in the ACDC layout: the zero-setup default of `uqbench run`.

Each patient gets short-axis ED and ES volumes (6-12 thick slices, z = 0 at the base) with reference
labels (0 background, 1 RV cavity, 2 myocardium, 3 LV cavity) and an Info.cfg. Anatomy follows the
ACDC groups: DCM (dilated LV, thin wall, low EF), HCM (small cavity, thick wall), MINF (dilated LV with
a thinned infarcted sector), NOR, RV (enlarged RV). The images carry what makes real scans hard:
irregular ring-shaped myocardium, a crescent RV with an unlabelled thin wall, papillary muscles and
trabeculations inside the cavities (labelled as cavity, as in ACDC), bright blood and dark
myocardium, epicardial fat, textured tissue and dark lungs, through-plane partial volume (each slice
averages three positions across its thickness), in-plane blur, a multiplicative bias field, Rician
noise, low contrast in basal and apical slices, and sometimes an unlabelled slice above the base.

Patient IDs follow the ACDC scheme (groups in blocks of 20), picked round-robin over groups and folds,
so the committed fold table applies unchanged and any N >= 4 patients spreads over all four folds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from uqbench.api import GROUPS
from uqbench.data import nifti
from uqbench.data.folds import acdc_folds

MAX_PATIENTS = 100
VERSION = 1  # bump when the generator's output changes


def phantom_ids(n: int) -> list[str]:
    """``n`` ACDC patient ids, round-robin over rounds, groups and folds (stratified by construction)."""
    if not 1 <= n <= MAX_PATIENTS:
        raise ValueError(f"--patients must be between 1 and {MAX_PATIENTS}, got {n}")
    folds = acdc_folds()
    by = {(g, f): [p for p in sorted(folds) if (int(p[7:]) - 1) // 20 == g and folds[p] == f]
          for g in range(5) for f in range(4)}
    order = [by[(g, f)][r] for r in range(5) for g in range(5) for f in range(4)]
    return sorted(order[:n])


@dataclass(frozen=True, slots=True, kw_only=True)
class Anatomy:
    """Per-patient heart geometry at ED, in mm."""

    lv_radius: float
    wall: float
    ef: float
    rv_scale: float
    rv_ef: float
    infarct: tuple[float, float] | None  # (centre angle, half width) of the thinned sector


def _anatomy(group: str, rng: np.random.Generator) -> Anatomy:
    j = lambda v, s=0.1: float(v * rng.uniform(1 - s, 1 + s))
    if group == "DCM":
        return Anatomy(lv_radius=j(33), wall=j(7.5), ef=j(0.22, 0.3), rv_scale=j(1.1), rv_ef=j(0.35), infarct=None)
    if group == "HCM":
        return Anatomy(lv_radius=j(19), wall=j(16), ef=j(0.7, 0.08), rv_scale=j(0.95), rv_ef=j(0.55), infarct=None)
    if group == "MINF":
        return Anatomy(lv_radius=j(29), wall=j(10), ef=j(0.33, 0.2), rv_scale=j(1.0), rv_ef=j(0.45),
                       infarct=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.5, 0.9))))
    if group == "RV":
        return Anatomy(lv_radius=j(23), wall=j(9.5), ef=j(0.58, 0.1), rv_scale=j(1.6), rv_ef=j(0.3, 0.2), infarct=None)
    return Anatomy(lv_radius=j(24), wall=j(10), ef=j(0.62, 0.08), rv_scale=j(1.0), rv_ef=j(0.55, 0.1), infarct=None)


def _smooth_field(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return f / (f.std() + 1e-8)


class _Patient:
    """Renders one patient's two phases on a fixed grid."""

    def __init__(self, pid: str, group: str, rng: np.random.Generator) -> None:
        self.pid, self.group, self.rng = pid, group, rng
        self.anat = _anatomy(group, rng)
        self.above_base = bool(rng.random() < 0.3)
        self.nz = int(rng.integers(6, 13))
        self.sz = float(rng.uniform(7.0, 10.0))
        self.sy = self.sx = float(rng.uniform(1.35, 1.9))
        fov = rng.uniform(170, 205)
        self.ny, self.nx = int(fov / self.sy), int(fov * rng.uniform(0.85, 1.0) / self.sx)
        yy, xx = np.meshgrid(np.arange(self.ny) * self.sy, np.arange(self.nx) * self.sx, indexing="ij")
        self.yy, self.xx = yy - yy.mean(), xx - xx.mean()
        self.centre = rng.uniform(-15, 15, 2)
        self.drift = rng.uniform(-6, 6, 2)  # centre moves this much from base to apex
        self.rv_angle = float(rng.normal(np.pi, 0.25))  # RV sits to one side of the LV
        self.modes = [(k, rng.uniform(0, 0.07), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]
        self.pm = (float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(1.8, 2.4)))
        self.trabeculae = rng.uniform(0, 1, (14, 2))
        self.fat = rng.uniform(0, 2 * np.pi, 3)
        shape = (self.nz, self.ny, self.nx)
        self.texture = _smooth_field(shape, 3.0, rng)
        ny, nx = self.ny, self.nx
        bias = _smooth_field((1, max(4, ny // 16), max(4, nx // 16)), 1.0, rng)[0]
        self.bias = np.exp(0.18 * ndimage.zoom(bias, (ny / bias.shape[0], nx / bias.shape[1]), order=1)[:ny, :nx])
        self.noise = float(rng.uniform(0.035, 0.065))
        self.gain = float(rng.uniform(400, 1200))

    def _geometry(self, u: float, phase: str) -> dict[str, np.ndarray]:
        """Soft (0..1) membership maps at relative depth ``u`` (0 base, 1 apex) of one phase."""
        a = self.anat
        cy, cx = self.centre + self.drift * u
        dy, dx = self.yy - cy, self.xx - cx
        r = np.hypot(dy, dx)
        th = np.arctan2(dy, dx)
        shape = 1 + sum(amp * np.cos(k * th + ph) for k, amp, ph in self.modes)
        taper = np.sqrt(np.clip(1 - (u * 1.02) ** 2, 0, 1))
        rl = a.lv_radius * (1.0 if phase == "ED" else np.sqrt(1 - a.ef))
        area_myo = (a.lv_radius + a.wall) ** 2 - a.lv_radius ** 2
        wall = np.sqrt(rl ** 2 + area_myo) - rl
        if a.infarct is not None:
            d = np.abs(np.angle(np.exp(1j * (th - a.infarct[0]))))
            wall = wall * (1 - 0.55 * np.clip(1 - d / a.infarct[1], 0, 1) ** 0.5)
        r_endo = rl * taper * shape
        r_epi = r_endo + wall * (1 - 0.25 * u) + 2.5 * (taper < 0.35)  # apical cap: myocardium only
        soft = lambda d: np.clip(0.5 - d / 1.2, 0, 1)
        lv = soft(r - r_endo) * (taper > 0.12)
        myo = np.clip(soft(r - r_epi) * (taper > 0.0) - lv, 0, 1)
        # crescent RV: an ellipse beside the LV minus the LV with the thin RV wall around it
        rv_taper = np.sqrt(np.clip(1 - (u / 0.82) ** 2, 0, 1))
        rvs = a.rv_scale * rv_taper * (1.0 if phase == "ED" else np.sqrt(1 - a.rv_ef))
        ca, sa = np.cos(self.rv_angle), np.sin(self.rv_angle)
        ex, ey = dx - ca * (a.lv_radius + a.wall) * 0.75, dy - sa * (a.lv_radius + a.wall) * 0.75
        along, across = ex * ca + ey * sa, -ex * sa + ey * ca
        semi_r, semi_t = 0.55 * (a.lv_radius + a.wall) * rvs + 1e-3, 1.25 * (a.lv_radius + a.wall) * rvs + 1e-3
        ell = np.hypot(along / semi_r, across / semi_t)
        rv_out = soft((ell - 1) * semi_r)
        lv_block = soft(r - (r_epi + 2.5))
        rv = np.clip(rv_out - lv_block, 0, 1) * (rvs > 0.15)
        rv_wall = np.clip(soft((ell - 1) * semi_r - 2.5) - rv - lv_block, 0, 1) * (rvs > 0.15)
        # papillary muscles (two) and trabeculations: dark spots labelled as cavity
        dark = np.zeros_like(r)
        if 0.25 < u < 0.8:
            for ang in (self.pm[0], self.pm[0] + self.pm[1]):
                py, px = cy + 0.6 * rl * taper * np.sin(ang), cx + 0.6 * rl * taper * np.cos(ang)
                dark = np.maximum(dark, soft(np.hypot(self.yy - py, self.xx - px) - 3.0))
        for t_ang, t_r in self.trabeculae:
            ang = t_ang * 2 * np.pi
            rr = (0.82 + 0.15 * t_r) * rl * taper
            py, px = cy + rr * np.sin(ang), cx + rr * np.cos(ang)
            dark = np.maximum(dark, 0.8 * soft(np.hypot(self.yy - py, self.xx - px) - 1.2))
        dark = dark * lv
        outside = (1 - rv - rv_wall - lv - myo).clip(0, 1)
        fat = soft(np.abs(r - r_epi - 2.0) - 1.5) * (np.cos(th - self.fat[0]) > 0.2) * outside
        return {"lv": lv, "myo": myo, "rv": rv, "rv_wall": rv_wall, "dark": dark, "fat": fat}

    def render(self, phase: str) -> tuple[np.ndarray, np.ndarray]:
        """(image int16 [Z, Y, X], labels uint8 [Z, Y, X]) of one phase."""
        rng = self.rng
        first = 1 if self.above_base else 0
        labelled = self.nz - first
        body = np.hypot(self.yy / (0.47 * np.ptp(self.yy)), self.xx / (0.5 * np.ptp(self.xx))) < 1
        lungs = np.zeros_like(self.yy, dtype=bool)
        for side in (-1, 1):
            lungs |= np.hypot((self.yy + 10) / 55, (self.xx - side * 0.3 * np.ptp(self.xx)) / 30) < 1
        image = np.zeros((self.nz, self.ny, self.nx), np.float32)
        labels = np.zeros((self.nz, self.ny, self.nx), np.uint8)
        blood = 0.9 if phase == "ED" else 0.82
        for z in range(self.nz):
            u = (z - first) / max(1, labelled - 1) * 0.97  # relative depth; < 0 above the base
            tissue = 0.45 + 0.07 * self.texture[z]
            base = np.where(body, tissue, 0.0)
            base = np.where(lungs & body, 0.06, base)
            acc = np.zeros_like(base)
            for du in (-0.33, 0.0, 0.33):  # through-plane partial volume across the slice thickness
                uu = u + du * self.sz / (max(1, labelled) * 10.0)
                if uu < 0:  # above the base: atria and great vessels, bright blood but no labels
                    g = self._geometry(0.0, phase)
                    atria = np.clip(g["lv"] + 0.8 * g["rv"], 0, 1) * (0.6 + 0.4 * (z == 0))
                    acc += base * (1 - atria) + blood * atria
                    continue
                if uu > 1.0:
                    acc += base
                    continue
                g = self._geometry(uu, phase)
                heart = np.clip(g["lv"] + g["myo"] + g["rv"] + g["rv_wall"] + g["fat"], 0, 1)
                contrast = 1 - 0.45 * np.exp(-((uu / 0.12) ** 2)) - 0.45 * np.exp(-(((1 - uu) / 0.15) ** 2))
                myo_i = 0.28
                blood_i = myo_i + contrast * (blood - myo_i)  # slow flow: dim blood at base and apex
                val = (g["lv"] * (blood_i - g["dark"] * (blood_i - myo_i)) + g["rv"] * blood_i
                       + (g["myo"] + g["rv_wall"]) * myo_i + g["fat"] * 0.75)
                acc += base * (1 - heart) + val
            image[z] = acc / 3
            if 0 <= u <= 1.0:
                g = self._geometry(u, phase)
                lab = np.zeros(g["lv"].shape, np.uint8)
                lab[g["rv"] >= 0.5] = 1
                lab[g["myo"] >= 0.5] = 2
                lab[g["lv"] >= 0.5] = 3
                labels[z] = lab
        image = ndimage.gaussian_filter(image, (0, 0.7, 0.7)) * self.bias[None]
        sigma = self.noise
        image = np.sqrt((image + rng.normal(0, sigma, image.shape)) ** 2 + rng.normal(0, sigma, image.shape) ** 2)
        return np.round(image * self.gain).astype(np.int16), labels


def write_phantom(out: Path, patients: int = 20, seed: int = 0, *,
                  advance: Callable[[int], None] | None = None) -> list[str]:
    """Write ``patients`` synthetic patients in the ACDC layout under ``out``; returns their ids."""
    ids = phantom_ids(patients)
    for pid in ids:
        number = int(pid[7:])
        group = GROUPS[(number - 1) // 20]
        rng = np.random.default_rng([seed, number])
        pat = _Patient(pid, group, rng)
        pdir = out / pid
        pdir.mkdir(parents=True, exist_ok=True)
        es = int(rng.integers(9, 15))
        affine = np.diag([pat.sx, pat.sy, pat.sz, 1.0])
        for phase, frame in (("ED", 1), ("ES", es)):
            image, labels = pat.render(phase)
            nifti.write(pdir / f"{pid}_frame{frame:02d}.nii.gz", image, affine)
            nifti.write(pdir / f"{pid}_frame{frame:02d}_gt.nii.gz", labels, affine)
        height, weight = rng.normal(172, 9), rng.normal(76, 12)
        (pdir / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: {group}\nHeight: {height:.1f}\n"
                                       f"NbFrame: 30\nWeight: {weight:.1f}\n")
        if advance:
            advance(1)
    return ids
