"""The CLI's bad-input table: each fault gives one line naming the file or option and exit status 2."""

from __future__ import annotations

import functools
import gzip
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from uqbench import run as runs
from uqbench.cli import main
from uqbench.data import nifti
from uqbench.data.folds import acdc_folds
from uqbench.kinds import LOSS, SEGMENTER, UNCERTAINTY, Kind
from uqbench.run import graph


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["uqbench", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--segmenter", "drm"], "unknown segmenter 'drm'. Did you mean 'drn'?"),
    (["run", "--uncertainty", "bmapp"], "unknown uncertainty map 'bmapp'. Did you mean 'bmap'?"),
    (["run", "--loss", "dice"], "unknown loss 'dice'"),
    (["run", "--loss", "ce:1"], "loss 'ce:1': bad arguments: CrossEntropy() takes no arguments"),
    (["run", "--detector", "oracle"], "unknown detector 'oracle'"),
    (["run", "--folds", "0,5"], "--folds '0,5': fold '5' is not one of 0..3"),
    (["run", "--folds", "0,0"], "--folds '0,0': fold '0' is given twice"),
    (["run", "--seed", "-1"], "--seed -1: must be 0 or more"),
    (["run", "--out", ""], "--out '': name a folder (an empty name would mean the current one)"),
    (["folds", "--format", "yaml"], "--format 'yaml': expected one of table, json, nnunet"),
    (["folds", "--format", "nnunet"], "--data goes with --format nnunet"),
    (["run", "--profile", "fast"], "--profile 'fast': expected one of quick, cpu, paper"),
    (["run", "--device", "tpu"], "--device 'tpu': expected auto, cpu or cuda"),
    (["run", "--precision", "fp16"], "--precision 'fp16': expected one of auto, fp32, bf16"),
    (["bench", "infer", "--precision", "half"], "--precision 'half': expected one of auto, fp32, bf16"),
    (["run", "--uncertainty", "emap", "--samples", "5"], "--samples 5: uncertainty map 'emap' reads one prediction"),
    (["run", "--samples", "0"], "--samples 0: must be at least 1"),
    (["run", "--iterations", "0"], "--iterations 0: must be at least 1"),
    (["run", "--data", "/no/such/folder"], "--data /no/such/folder: not a folder"),
    (["run", "--failure-preset", "papr"], "--failure-preset 'papr': expected one of paper, seed-code"),
    (["run", "--protocol", "sander"], "--protocol 'sander': expected one of uqbench, sander2020, seed-code"),
    (["run", "--correction", "all"], "--correction 'all': expected one of patch, failures-only"),
    (["run", "--detector-training", "both"], "--detector-training 'both': expected one of out-of-fold, in-sample"),
    (["plugins", "--kind", "segmenters"], "--kind 'segmenters': expected one of"),
    (["bench", "metrics", "--volumes", "1"], "--volumes 1: need at least 2"),
    (["bench", "train", "--iterations", "0"], "--iterations 0: must be at least 1"),
    (["bench", "train", "--segmenter", "drm"], "unknown segmenter 'drm'"),
    (["bench", "train", "--profile", "slow"], "--profile 'slow': expected one of"),
    (["bench", "infer", "--uncertainty", "emap"], "--uncertainty emap: a one-pass map"),
    (["bench", "infer", "--samples", "1"], "need at least 2 samples"),
    (["bench", "metrics", "--data", "/no/such/folder"], "--data /no/such/folder: not a folder"),
    (["data", "phantom", "/tmp/x-uqbench-never", "--patients", "0"], "--patients must be between 1 and 100"),
    (["run", "--force", "infer"], "--force 'infer': expected one of train, predict, maps, score, detect"),
    (["run", "--sampler", "tta", "--profile", "cpu", "--segmenter", "unet"],
     "--sampler tta: it turns the slices by quarter turns, but segmenter 'unet' was trained keeping their"),
    (["cache", "prune"], "cache prune: say what to delete: --stage, --older-than or --all"),
    (["cache", "prune", "--all", "--stage", "maps"], "cache prune: --all deletes everything"),
    (["cache", "prune", "--older-than", "-1"], "--older-than -1.0: must be 0 or more days"),
])
def test_bad_option_is_one_line_and_exit_2_before_any_work(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)  # where the default --out (runs/...) would be written
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_unknown_option_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(monkeypatch, capsys, "run", "--bogus")
    assert code == 2 and "No such option" in err


def _frame(root: Path, patient: str = "patient001", *, gt: bool = False) -> Path:
    return root / patient / f"{patient}_frame01{'_gt' if gt else ''}.nii.gz"


def _set_pixdim(path: Path, zooms_xyz: tuple[float, float, float]) -> Path:
    """Overwrite the voxel size in a file's header bytes (pixdim[1:4], little-endian float32 at byte 80), as a
    damaged file would carry it: nibabel itself would not write a 0 or a negative size."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    assert np.frombuffer(bytes(raw[:4]), "<i4")[0] == 348  # a little-endian NIfTI-1 header
    raw[80:92] = np.asarray(zooms_xyz, "<f4").tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def _edit(path: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Path:
    """Rewrite a NIfTI file with `change(data, affine)` applied."""
    data, _, affine = nifti.read(path)
    nifti.write(path, *change(data, affine))
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:2000])
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(gzip.compress(b"not a nifti"))
    return path


def _unlink(path: Path) -> Path:
    path.unlink()
    return path


def _info(root: Path, text: str) -> Path:
    cfg = root / "patient001" / "Info.cfg"
    cfg.write_text(text)
    return cfg


def _label_7(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data[0, 0, 0] = 7
    return data, affine


def _one_nan(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = data.astype(np.float32)
    out[0, 0, 0] = np.nan
    return out, affine


def _shifted(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    moved = affine.copy()
    moved[0, 3] += 5
    return data, moved


# Damaged data: `data check` names the one damaged file with its problem (exit 2), and `run` refuses the folder
# with the same line before any work. Each row damages a private copy of the tiny phantom and returns the file.
DAMAGE: list[tuple[str, Callable[[Path], Path], str]] = [
    ("truncated", lambda r: _truncate(_frame(r)), "unreadable NIfTI"),
    ("gzip-garbage", lambda r: _garbage(_frame(r)), "unreadable NIfTI"),
    ("missing-label", lambda r: _unlink(_frame(r, gt=True)), "missing (ED frame 1 named in Info.cfg)"),
    ("label-value-7", lambda r: _edit(_frame(r, gt=True), _label_7), "label values 7 outside 0..3"),
    ("label-shape", lambda r: _edit(_frame(r, gt=True), lambda d, a: (d[:, :-1], a)), "shape"),
    ("label-affine", lambda r: _edit(_frame(r, gt=True), _shifted), "affine differs"),
    ("image-nan", lambda r: _edit(_frame(r), _one_nan), "1 non-finite voxels"),
    ("constant-image", lambda r: _edit(_frame(r), lambda d, a: (np.full_like(d, 7), a)),
     "constant image (every voxel is 7): it cannot be normalised"),
    ("info-malformed", lambda r: _info(r, "ED 1\nES: 2\nGroup: DCM\n"), "malformed line 1"),
    ("info-no-ed", lambda r: _info(r, "ES: 2\nGroup: DCM\n"), "no 'ED' field"),
    ("info-ed-not-int", lambda r: _info(r, "ED: one\nES: 2\nGroup: DCM\n"), "ED frame 'one' is not an integer"),
    ("info-unknown-group", lambda r: _info(r, "ED: 1\nES: 2\nGroup: XYZ\n"), "unknown Group 'XYZ'"),
    ("spacing-0", lambda r: _set_pixdim(_frame(r), (0.0, 1.5, 10.0)),
     "voxel spacing 0 x 1.5 x 10 mm is not positive and finite"),
    ("spacing-negative", lambda r: _set_pixdim(_frame(r), (-1.5, 1.5, 10.0)),
     "voxel spacing -1.5 x 1.5 x 10 mm is not positive and finite"),
    ("spacing-nan", lambda r: _set_pixdim(_frame(r), (np.nan, 1.5, 10.0)),
     "voxel spacing nan x 1.5 x 10 mm is not positive and finite"),
    ("spacing-1e6", lambda r: _set_pixdim(_frame(r), (1e6, 1e6, 10.0)),  # once allocated 98 GiB and died
     "voxel spacing 1e+06 x 1e+06 x 10 mm is implausible (in-plane 0.1-20 mm, slices 0.5-50 mm)"),
    ("spacing-tiny", lambda r: _set_pixdim(_frame(r), (0.05, 1.5, 10.0)), "voxel spacing 0.05 x 1.5 x 10 mm is "
     "implausible"),
    ("slices-thin", lambda r: _set_pixdim(_frame(r), (1.5, 1.5, 0.2)), "voxel spacing 1.5 x 1.5 x 0.2 mm is "
     "implausible"),
    ("slices-thick", lambda r: _set_pixdim(_frame(r), (1.5, 1.5, 80.0)), "voxel spacing 1.5 x 1.5 x 80 mm is "
     "implausible"),
]


@pytest.mark.parametrize(("damage", "message"), [pytest.param(d, m, id=i) for i, d, m in DAMAGE])
def test_damaged_data_is_one_line_naming_the_file_in_check_and_run(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   phantom_copy: Path, tmp_path: Path,
                                                                   damage: Callable[[Path], Path],
                                                                   message: str) -> None:
    path = damage(phantom_copy)
    code, out, _ = run_main(monkeypatch, capsys, "data", "check", str(phantom_copy))
    problems = [line for line in out.splitlines() if line.startswith("problem")]
    assert code == 2 and len(problems) == 1 and problems[0].startswith(f"problem {path}: "), out
    assert message in problems[0], out
    code, _, err = run_main(monkeypatch, capsys, "run", "--data", str(phantom_copy), "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith(f"error: {path}: ") and len(err.strip().splitlines()) == 1, err
    assert message in err and not (tmp_path / "r").exists()


def test_data_check_names_every_damaged_file_at_once(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], phantom_copy: Path) -> None:
    img = _truncate(_frame(phantom_copy))
    gt = _unlink(_frame(phantom_copy, "patient006", gt=True))
    bad = _edit(_frame(phantom_copy, "patient011", gt=True), _label_7)
    cfg = phantom_copy / "patient016" / "Info.cfg"
    cfg.write_text("ED: 1\nthis line is broken\n")
    code, out, _ = run_main(monkeypatch, capsys, "data", "check", str(phantom_copy))
    problems = [line for line in out.splitlines() if line.startswith("problem")]
    assert code == 2 and len(problems) == 4
    for path in (img, gt, bad, cfg):
        assert any(str(path) in line for line in problems), path
    assert f"{phantom_copy}: 4 problems" in out


def test_data_check_clean_folder_exits_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         tiny_phantom: Path) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "data", "check", str(tiny_phantom))
    assert code == 0 and "4 patients, 8 volumes, 0 problems" in out


def _as_patient(root: Path, old: str, new: str) -> None:
    """Rename patient ``old`` to ``new``, its folder and files."""
    (root / old).rename(root / new)
    for f in (root / new).iterdir():
        f.rename(f.with_name(f.name.replace(old, new)))


def test_a_held_out_test_patient_is_read_but_cross_validation_refuses_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], phantom_copy: Path,
        tmp_path: Path) -> None:
    _as_patient(phantom_copy, "patient016", "patient116")
    code, out, _ = run_main(monkeypatch, capsys, "data", "check", str(phantom_copy))
    assert code == 0 and "4 patients, 8 volumes, 0 problems" in out
    table = acdc_folds()
    folds = ",".join(sorted(str(table[p]) for p in ("patient001", "patient006", "patient011")))
    code, _, err = run_main(monkeypatch, capsys, "run", "--data", str(phantom_copy), "--folds", folds, "--iterations",
                            "1", "--detector", "none", "--out", str(tmp_path / "r"))
    assert code == 2 and f"{phantom_copy}: patient116 has no fold in the committed split" in err
    assert not (tmp_path / "r").exists()


def test_data_check_reads_the_nnunet_layout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                            nnunet_phantom: Path) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "data", "check", "--dataset", "nnunet", str(nnunet_phantom))
    assert code == 0 and "4 patients, 8 volumes, 0 problems" in out


def test_data_phantom_refuses_a_non_empty_folder(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run_main(monkeypatch, capsys, "data", "phantom", str(tmp_path))
    assert code == 2 and f"{tmp_path}: exists and is not empty" in err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_folds_json_matches_the_committed_table(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "folds", "--format", "json")
    folds = json.loads(out)
    assert code == 0 and folds["patient016"] == 0 and folds["patient100"] == 0 and len(folds) == 100


def test_folds_in_nnunet_format_split_each_patients_frames_together(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_phantom: Path,
        nnunet_phantom: Path) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "folds", "--format", "nnunet", "--data", str(nnunet_phantom))
    splits = json.loads(out)
    stems = sorted(f.name.removesuffix(".nii.gz") for f in (nnunet_phantom / "labelsTr").iterdir())
    table = json.loads(run_main(monkeypatch, capsys, "folds", "--format", "json")[1])
    assert code == 0 and len(splits) == 4 and len(stems) == 8
    for k, split in enumerate(splits):
        assert sorted(split) == ["train", "val"] and sorted(split["train"] + split["val"]) == stems
        assert split["val"] == [s for s in stems if table[s[:10]] == k] and len(split["val"]) == 2
    # the ACDC layout names the same cases from Info.cfg
    assert json.loads(run_main(monkeypatch, capsys, "folds", "--format", "nnunet", "--data", str(tiny_phantom))[1]) \
        == splits


def test_plugins_json_lists_the_builtins_with_distribution(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "plugins", "--json")
    assert code == 0
    names = {(m["kind"], m["name"]): m["distribution"] for m in json.loads(out)["methods"]}
    for key in [("segmenter", "drn"), ("uncertainty", "emap"), ("uncertainty", "bmap"), ("loss", "ce"),
                ("loss", "soft-dice"), ("loss", "brier"), ("detector", "threshold")]:
        assert names[key] == "uqbench"


@pytest.mark.e2e
def test_bench_metrics_prints_ratios_and_agreement(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "bench", "metrics", "--volumes", "2")
    assert code == 0
    assert "medpy" in out and "max |HD diff| 0.0e+00 mm" in out  # MedPy is a test dependency: HD identical
    assert out.count("identical") == 2 and "DIFFER" not in out


@pytest.mark.parametrize(("args", "extra"), [(("sweep", "--help"), "slurm"), (("bench", "metrics", "--help"), "bench")])
def test_help_names_the_extra_to_install_literally(args: tuple[str, ...], extra: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The brackets of an extra are not taken for rich markup (which would print pip install 'uqbench')."""
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_main(monkeypatch, capsys, *args)
    assert code == 0 and f"pip install 'uqbench[{extra}]'" in out


@pytest.mark.e2e
def test_bench_train_and_infer_print_their_figures(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "bench", "train", "--iterations", "2", "-s", "drn", "-s", "unet",
                            "--channels-first", "--precision", "fp32", "--other-precision", "--lazy-constants")
    assert code == 0 and "drn" in out and "unet" in out and "8 x 96" in out and "min" in out
    assert "libtorch's constants unmapped" in out
    assert out.count("channels-first") == 4 and out.count("channels-last") == 4
    assert out.count("fp32") == 4 and out.count("bf16") == 4  # each net in both precisions, both layouts
    code, out, _ = run_main(monkeypatch, capsys, "bench", "infer", "--volumes", "1", "--samples", "2",
                            "--default-heap")
    assert code == 0 and "2 samples per pass, running moments" in out and "stacked samples" in out
    assert "running moments, channels-first" in out and "glibc's default heap" in out


def test_bench_train_other_precision_on_a_cuda_device_without_bf16_is_refused_before_timing(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uqbench.cli.bench as bench

    monkeypatch.setattr(bench, "resolve_device", lambda device: "cuda")
    monkeypatch.setattr(bench, "native_bf16", lambda device: False)
    monkeypatch.setattr("uqbench.bench.speed.train_speed", lambda *a, **k: pytest.fail("timed"))
    code, _, err = run_main(monkeypatch, capsys, "bench", "train", "--precision", "fp32", "--other-precision")
    assert code == 2 and "--other-precision: this CUDA device has no bf16 support" in err


def _no_fold3(root: Path) -> Path:
    """The tiny phantom without its fold-3 patient."""
    import shutil

    shutil.rmtree(root / "patient001")  # patient001 is in fold 3
    return root


# Faults of the machine and of the output folder: one line naming the path or option, exit 2, and whatever
# was there before is left as it was.
@pytest.mark.parametrize(("case", "message"), [
    ("out-is-a-file", "is a file, not a folder"),
    ("out-cannot-be-created", "/sys/uqbench-out: "),
    ("cache-cannot-be-created", "/sys/uqbench-cache"),
    ("corrupt-config", "config.json: not a uqbench configuration"),
    ("refused-leaves-no-config", "--folds: fold 3 has no patients"),
])
def test_a_fault_is_one_line_naming_the_path_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], tiny_phantom: Path,
                                                        phantom_copy: Path, tmp_path: Path, case: str,
                                                        message: str) -> None:
    data, out = tiny_phantom, tmp_path / "run"
    if case == "out-is-a-file":
        out.write_text("mine")
    elif case == "out-cannot-be-created":
        out = Path("/sys/uqbench-out")  # sysfs refuses new folders, even to root
    elif case == "cache-cannot-be-created":
        monkeypatch.setenv("UQBENCH_CACHE", "/sys/uqbench-cache")
    elif case == "corrupt-config":
        out.mkdir()
        (out / "config.json").write_text("{half a file")
    elif case == "refused-leaves-no-config":
        data = _no_fold3(phantom_copy)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    args = ["run", "--out", str(out), "--folds", "3" if case == "refused-leaves-no-config" else "0",
            "--detector", "none", "--iterations", "1"]
    if case != "cache-cannot-be-created":  # that one uses the built-in phantom, which lives in the cache
        args += ["--data", str(data)]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written
    assert not (tmp_path / "run" / "config.json").exists() or case == "corrupt-config"


@functools.cache
def _read_only_mount_works() -> bool:
    """True where `unshare` can give a subprocess its own read-only tmpfs (a user namespace: no root needed)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    probe = "mount -t tmpfs -o ro none /mnt && ! mkdir /mnt/x 2>/dev/null"
    return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0


# A real read-only file system: the CLI runs in a private mount namespace where /mnt is a read-only tmpfs.
@pytest.mark.e2e
@pytest.mark.skipif(not _read_only_mount_works(), reason="unshare cannot mount a read-only tmpfs on this machine")
@pytest.mark.parametrize(("where", "message"), [
    ("out", "error: /mnt/run: Read-only file system"),
    ("cache", "error: /mnt/cache"),
])
def test_a_read_only_file_system_is_one_line_naming_the_path(tiny_phantom: Path, where: str, message: str) -> None:
    import shlex
    import subprocess

    cmd = [sys.executable, "-m", "uqbench", "run", "--folds", "0", "--detector", "none", "--iterations", "1"]
    cmd += ["--out", "/mnt/run"] if where == "out" else ["--out", "/tmp/uqbench-ro-never"]  # the cache fails first
    if where == "out":
        cmd += ["--data", str(tiny_phantom)]
    env = "UQBENCH_CACHE=/mnt/cache " if where == "cache" else ""
    script = f"mount -t tmpfs -o ro none /mnt && {env}exec {shlex.join(cmd)}"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(message) and "Read-only file system" in done.stderr, done.stderr


def test_ctrl_c_says_what_was_kept_and_how_to_resume(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tiny_phantom: Path,
                                                     tmp_path: Path) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "run", interrupted)
    code, _, err = run_main(monkeypatch, capsys, "run", "--data", str(tiny_phantom), "--out", str(tmp_path / "r"))
    flat = " ".join(err.split())  # the console wraps long lines
    assert code == 130 and "interrupted: what finished is kept" in flat and "run the same command again" in flat


def test_version_and_the_help_name_the_method_syntax_and_the_default_output(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uqbench

    code, out, _ = run_main(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"uqbench {uqbench.__version__}"
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_main(monkeypatch, capsys, "run", "--help")
    flat = " ".join(out.split())
    assert code == 0 and "name:arg:... (e.g. smp:unet:resnet34)" in flat
    assert "runs/drn-mc-dropout-bmap-phantom-quick" in flat


@pytest.mark.parametrize(("columns", "widest"), [(None, 160), ("100", 100)])
def test_output_to_a_log_is_160_columns_wide_unless_columns_says_otherwise(columns: str | None, widest: int) -> None:
    """A log (no stream a terminal) gets tables 160 wide, not rich's 80 that cut names like dn:authors."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | ({"COLUMNS": columns} if columns else {})
    done = subprocess.run([sys.executable, "-m", "uqbench", "plugins"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, check=True)
    assert max(len(line) for line in done.stdout.splitlines()) == widest
    assert "dn:authors" in done.stdout


def test_plugin_descriptions_are_whole_sentences() -> None:
    from uqbench.registry import registry

    cut = [(e.name, e.description) for e in registry().all_entries() if not e.description.endswith(".")]
    assert not cut, cut


@pytest.mark.e2e
def test_a_full_disk_is_one_line_and_the_rerun_completes(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], tiny_phantom: Path,
                                                         tmp_path: Path, fresh_store: Path) -> None:
    """The disk fills while fold 1's predictions are written: fold 0's stages stay stored, the half-written stage
    is removed, and once there is room again the same command finishes the run from where it stopped."""
    import errno

    out = tmp_path / "run"
    args = ["run", "--data", str(tiny_phantom), "--out", str(out), "--folds", "0,1", "--detector", "none",
            "--iterations", "2", "--samples", "2"]
    real = np.savez_compressed
    predictions: list[str] = []

    def full_disk(file: object, *arrays: object, **named: object) -> None:
        if "/stages/predict/" in str(file):
            predictions.append(str(file))
            if len(predictions) > 4:  # fold 0: two patients' volumes, a deterministic and an MC pass each
                raise OSError(errno.ENOSPC, "No space left on device", str(file))
        real(file, *arrays, **named)  # type: ignore[arg-type]  # passes numpy's own arguments through

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {predictions[-1].removesuffix('.part.npz')}: No space left on device"), err
    assert len(list(fresh_store.glob("stages/predict/*/manifest.json"))) == 2  # fold 0's two passes
    assert not list(fresh_store.glob("stages/*/*.part"))  # nothing half-written stays
    monkeypatch.setattr(np, "savez_compressed", real)
    code, _, _ = run_main(monkeypatch, capsys, *args)
    assert code == 0 and (out / "summary.json").is_file()
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert [s["from_store"] for s in stages if s["fold"] == 0 and s["stage"] in ("train", "predict")] == [True] * 3


@pytest.mark.e2e
@pytest.mark.skipif(not _read_only_mount_works(), reason="unshare cannot mount a tmpfs on this machine")
def test_a_really_full_disk_is_one_line_and_the_rerun_completes(tiny_phantom: Path) -> None:
    """--out and the stage store on a 1 MiB tmpfs: the prepared data fits, the first checkpoint does not. Once the
    file system is remounted larger, the same command completes (both runs share one private mount namespace)."""
    import shlex
    import subprocess

    cmd = shlex.join([sys.executable, "-m", "uqbench", "run", "--data", str(tiny_phantom), "--out", "/mnt/run",
                      "--folds", "0", "--detector", "none", "--iterations", "2", "--samples", "2"])
    script = (f"mount -t tmpfs -o size=1m none /mnt && export UQBENCH_CACHE=/mnt/cache && "
              f"{{ {cmd} 2>&1 >/dev/null; echo exit=$?; ls /mnt/cache/stages/train; }}; "
              f"mount -o remount,size=64m /mnt && {{ {cmd} >/dev/null 2>&1; echo exit=$?; }}; ls /mnt/run")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    assert len(lines) >= 4 and lines[1] == "exit=2", done.stdout
    assert re.fullmatch(r"error: /mnt/cache/stages/train/\w+\.part/\S+: No space left on device \(nothing finished "
                        r"is lost; run again once this is fixed\)", lines[0]), lines[0]
    assert re.fullmatch(r"\w+\.lock", lines[2]), done.stdout  # the half-written stage is gone
    assert lines[3] == "exit=0" and "summary.json" in lines[4:], done.stdout

# Methods that break during a run: blamed where their output is produced, with the stage and the case.
def _break(monkeypatch: pytest.MonkeyPatch, of: Kind[Any], make: Callable[[Any], Any]) -> None:
    """Make the run create ``make(real method)`` for kind ``of``, and the real methods for every other kind."""
    real = graph.registry()

    class Registry:
        def __getattr__(self, attr: str) -> object:
            return getattr(real, attr)

        def create(self, kind: Kind[Any], spec: str, *args: object) -> object:
            method = real.create(kind, spec, *args)
            return make(method) if kind is of else method

    monkeypatch.setattr(graph, "registry", Registry)


class _RaisingLoss:
    name = "ce"

    def __init__(self, real: object) -> None:
        pass

    def __call__(self, logits, labels):  # type: ignore[no-untyped-def]  # a deliberately broken plugin
        raise RuntimeError("labels out of range")


class _NanLoss(_RaisingLoss):
    def __call__(self, logits, labels):  # type: ignore[no-untyped-def]  # as above
        return (logits * float("nan")).mean()


class _ThreeClasses:
    def __init__(self, real: Any) -> None:
        self.real, self.size_multiple = real, real.size_multiple

    def recipe(self, profile):  # type: ignore[no-untyped-def]  # as above
        return self.real.recipe(profile)

    def build(self, **kwargs):  # type: ignore[no-untyped-def]  # as above
        return self.real.build(**(kwargs | {"num_classes": 3}))


class _WideMap:
    def __init__(self, real: Any) -> None:
        self.real, self.samples, self.needs = real, real.samples, real.needs

    def __call__(self, probs):  # type: ignore[no-untyped-def]  # as above
        return self.real(probs)

    def from_moments(self, m):  # type: ignore[no-untyped-def]  # as above
        import torch

        return torch.nn.functional.pad(self.real.from_moments(m), (0, 1))  # one pixel too wide


class _RaisingMap(_WideMap):
    def from_moments(self, m):  # type: ignore[no-untyped-def]  # as above
        raise ZeroDivisionError("no samples")


@pytest.mark.e2e
@pytest.mark.parametrize(("of", "make", "message"), [
    (LOSS, _RaisingLoss, r"^loss 'ce' \(uqbench \S+\) failed in training, fold 0: RuntimeError: labels out of range$"),
    (LOSS, _NanLoss, r"^loss 'ce' \(uqbench \S+\) failed in training, fold 0: returned NaN or infinity at training "
                     r"step 1 \(the logits were finite\)$"),
    (SEGMENTER, _ThreeClasses, r"^segmenter 'drn' \(uqbench \S+\) failed in training, fold 0: the network returned "
                               r"logits \(8, 3, 96, 96\) for a batch \(8, 1, 96, 96\); expected \(8, 4, 96, 96\)$"),
    (UNCERTAINTY, _WideMap, r"^uncertainty 'bmap' \(uqbench \S+\) failed in computing the map, fold 0, "
                            r"patient\d{3} ED: returned a map of shape"
                            r" \(\d+, (\d+), (\d+)\) for \d+ slices of \1 x \d+"),
    (UNCERTAINTY, _RaisingMap, r"^uncertainty 'bmap' \(uqbench \S+\) failed in computing the map, fold 0, "
                               r"patient\d{3} ED: "
                               r"ZeroDivisionError: no samples$"),
])
def test_a_method_that_breaks_is_one_line_naming_it_with_its_stage_and_case(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_phantom: Path, tmp_path: Path,
        fresh_store: Path,
        of: Kind[Any], make: Callable[[Any], Any], message: str) -> None:
    _break(monkeypatch, of, make)
    code, _, err = run_main(monkeypatch, capsys, "run", "--data", str(tiny_phantom), "--out", str(tmp_path / "run"),
                            "--folds", "0", "--detector", "none", "--iterations", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.match(message, err.strip().removeprefix("error: ")), err
    stored = {p.parent.parent.name for p in fresh_store.glob("stages/*/*/manifest.json")}
    assert stored <= ({"train", "predict"} if of is UNCERTAINTY else set())  # nothing a broken method made is stored
