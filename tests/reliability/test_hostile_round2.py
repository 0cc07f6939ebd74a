"""Hostile inputs, round 2 (issue 16): one test (or family) per class of failure found by an
outside tester. Each failed before its fix; the comment on each says what used to happen.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spin.cli import train as train_cli
from spin.config import ConfigError, load_config
from spin.train.config import TrainConfig
from spin.train.trainer import RunFolderError, Trainer
from tests.train.tiny import TINY, tiny_config

SHORT_RUN = ["num_steps=1", "val_every=0", "checkpoint_every=1", "threads=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_tiny")


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A finished one-step run: ``(run_dir, run folder)``."""
    run_dir = tmp_path_factory.mktemp("runs")
    Trainer(tiny_config(data_dir, run_dir, *SHORT_RUN), progress=False).run()
    return run_dir, run_dir / "tiny"


def _train(data_dir, run_dir, *args) -> tuple[int, str]:
    """spin-train in this process; (exit code, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    argv = [
        "--config",
        str(TINY),
        "--no-progress",
        *[a for a in args if a.startswith("--")],
        f"data.synthetic.out_dir={data_dir}",
        f"run_dir={run_dir}",
        *SHORT_RUN,
        *[a for a in args if not a.startswith("--")],
    ]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = train_cli.main(argv)
    return code, err.getvalue()


# --- 1. A finished run is never overwritten silently; names stay inside run_dir -------------


def test_a_finished_run_is_not_overwritten_without_overwrite(data_dir, finished_run):
    # Used to: replace checkpoint.pt and fits_cache.h5 and cut metrics.jsonl, exit 0.
    run_dir, run = finished_run
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    code, err = _train(data_dir, run_dir)
    assert code == 1
    assert err.count("\n") == 1 and "--resume" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before


def test_overwrite_replaces_the_run(data_dir, tmp_path):
    Trainer(tiny_config(data_dir, tmp_path, *SHORT_RUN), progress=False).run()
    marker = tmp_path / "tiny" / "old_file.txt"
    marker.write_text("from the old run")
    code, err = _train(data_dir, tmp_path, "--overwrite")
    assert code == 0, err
    assert not marker.exists() and (tmp_path / "tiny" / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "", ".", "a/b"])
def test_names_that_leave_run_dir_are_refused(name):
    # Used to: write outside run_dir (../.., absolute) or into run_dir itself (empty).
    with pytest.raises(ConfigError, match="plain folder name"):
        load_config(TrainConfig, TINY, [f"name={name}"])


# --- 2. --resume checks what it resumes --------------------------------------------------------


def test_resume_refuses_another_body_model_or_backbone(data_dir, finished_run):
    # Used to: continue silently with another body model or another backbone.
    run_dir, _ = finished_run
    for override, key in (
        ("body_model=open", "body_model"),
        ("hmr.backbone.name=resnet18", "hmr.backbone.name"),
    ):
        config = tiny_config(data_dir, run_dir, *SHORT_RUN, "num_steps=2", override)
        with pytest.raises(RunFolderError, match=f"{key}: .* in the checkpoint"):
            Trainer(config, resume=True, progress=False)


def test_resume_without_checkpoint_says_a_new_run_starts(data_dir, tmp_path, capsys):
    # Used to: train from scratch without a word.
    Trainer(tiny_config(data_dir, tmp_path, *SHORT_RUN), resume=True, progress=False)
    assert "nothing to resume, starting a new run" in capsys.readouterr().out


def test_resume_without_the_fits_cache_is_refused(data_dir, tmp_path):
    # Used to: continue with an empty cache, losing every refined fit.
    Trainer(tiny_config(data_dir, tmp_path, *SHORT_RUN), progress=False).run()
    (tmp_path / "tiny" / "fits_cache.h5").unlink()
    config = tiny_config(data_dir, tmp_path, *SHORT_RUN, "num_steps=2")
    with pytest.raises(RunFolderError, match="fits_cache.h5 is missing"):
        Trainer(config, resume=True, progress=False)


# --- 7. No hang on special files; 8. no traceback for bad settings ----------------------------


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("batch_size=-8", "batch_size must be >= 1"),
        ("num_steps=0", "num_steps must be >= 1"),
        ("log_every=0", "log_every must be >= 1"),
        ("data.img_size=0", "img_size must be >= 16"),
        ("lr=.inf", "lr must be a finite number"),
    ],
)
def test_bad_settings_are_one_line_usage_errors(override, match, tmp_path):
    # Used to: "length must be positive", ZeroDivisionError, "Singular matrix", or NaN later.
    code, err = _train(tmp_path / "data", tmp_path, override)
    assert code == 2 and match in err and err.count("\n") == 1, err
    assert not (tmp_path / "tiny").exists()


def test_config_files_that_hang_or_carry_tags_are_refused(tmp_path):
    # Used to: read /dev/zero until memory ran out; a !!python tag ended in a traceback; a
    # 600-byte alias bomb printed a 351 MB message.
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text('name: !!python/object/apply:os.system ["echo owned"]\n')
    layers = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for i, letter in enumerate("bcdefgh"):
        previous = "abcdefgh"[i]
        layers.append(f"{letter}: &{letter} [" + ",".join([f"*{previous}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(layers) + "\n")
    command = [sys.executable, "-m", "spin.cli.train", "--config"]
    for path, match in (
        ("/dev/zero", "not a regular file"),
        (str(fifo), "not a regular file"),
        (str(tagged), "not valid plain YAML"),
        (str(bomb), "unknown key"),
    ):
        done = subprocess.run([*command, path], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert match in done.stderr and len(done.stderr) < 3000, done.stderr[:500]
        assert "Traceback" not in done.stderr


def test_a_failed_start_leaves_no_half_made_run(data_dir, tmp_path, monkeypatch):
    # Used to: leave a run folder holding only config.json, which then blocked a new start.
    def fails(self, batch):
        raise FloatingPointError("non-finite loss at step 1 (injected)")

    monkeypatch.setattr(Trainer, "train_step", fails)
    code, err = _train(data_dir, tmp_path)
    assert code == 1 and "non-finite loss" in err and "Traceback" not in err
    assert not (tmp_path / "tiny").exists()


def test_debug_shows_the_traceback(data_dir, finished_run):
    run_dir, _ = finished_run
    with pytest.raises(RunFolderError):
        _train(data_dir, run_dir, "--debug")


def test_help_names_resume_overwrite_and_debug():
    text = train_cli.build_parser().format_help()
    for option in ("--resume", "--overwrite", "--debug"):
        assert option in text


# --- 4. Absurd but finite boxes are dropped and counted; 11. paths stay in the folder --------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from spin.data.synthetic import SyntheticConfig, generate_synthetic

    folder = tmp_path_factory.mktemp("synthetic5")
    config = SyntheticConfig(image_size=(96, 96), body_model="open-lite", fraction_3d=1.0)
    generate_synthetic(config, 5, folder, split="train", progress=False)
    return folder / "train.npz", folder


def _edited(synthetic, tmp_path, edit):
    import numpy as np

    npz, folder = synthetic
    arrays = dict(np.load(npz))
    edit(arrays)
    out = tmp_path / "edited.npz"
    np.savez(out, **arrays)
    return out, folder


@pytest.mark.parametrize(
    ("key", "row", "value"),
    [("center", 0, 1e30), ("scale", 1, 1e-30), ("scale", 2, 1e30), ("center", 3, 1e8)],
)
def test_absurd_boxes_are_dropped_and_counted(synthetic, tmp_path, key, row, value):
    # Used to: FloatingPointError at step 1 (center 1e30, scale 1e-30), OverflowError in
    # warp_image (scale 1e30), or training on with a loss of 1.8e14 (center 1e8).
    from spin.data.spin_dataset import SpinDataset

    def edit(arrays):
        arrays[key][row] = value

    npz, folder = _edited(synthetic, tmp_path, edit)
    with pytest.warns(UserWarning, match="unusable box"):
        dataset = SpinDataset(npz, folder, img_size=64)
    assert set(dataset.bad_boxes) == {row}
    item = dataset[row]
    assert item["sample_index"] != row and dataset.skipped == 1
    assert all(bool(v.isfinite().all()) for v in item.values() if hasattr(v, "isfinite"))


def test_training_and_eval_survive_an_absurd_box(synthetic, tmp_path):
    from spin.data.synthetic import SyntheticConfig  # noqa: F401  (same data as the fixture)

    def edit(arrays):
        arrays["center"][0] = 1e30
        arrays["scale"][3] = 1e30

    npz, folder = _edited(synthetic, tmp_path, edit)
    entry = f"{{name: few, npz: {npz}, images: {folder}}}"
    config = tiny_config(
        tmp_path / "unused",
        tmp_path,
        *SHORT_RUN,
        "num_steps=3",
        f"data.train=[{entry}]",
        f"data.val={entry}",
        "data.val_samples=5",
    )
    with pytest.warns(UserWarning, match="unusable box"):
        metrics = Trainer(config, progress=False).run()
    assert all(v == v and abs(v) < 1e6 for k, v in metrics.items() if k.startswith("loss/"))


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd"])
def test_image_paths_outside_the_folder_are_refused(synthetic, tmp_path, name):
    # Used to: open ../../ and absolute paths (an outside image used silently).
    from spin.data.spin_dataset import DatasetFormatError, SpinDataset

    def edit(arrays):
        arrays["imgname"] = arrays["imgname"].astype("<U64")
        arrays["imgname"][1] = name

    npz, folder = _edited(synthetic, tmp_path, edit)
    with pytest.raises(DatasetFormatError, match="outside the image folder.*allow_outside_images"):
        SpinDataset(npz, folder, img_size=64)
    if name.startswith("/etc"):
        return
    (folder.parent / "outside.png").write_bytes(
        (folder / str(np.load(npz)["imgname"][0])).read_bytes()
    )
    assert len(SpinDataset(npz, folder, img_size=64, allow_outside_images=True)) == 5


# --- 6. NaN in eval: labels left out and counted, valid JSON, a figure ----------------------


def _eval(*argv) -> tuple[int, str]:
    import contextlib
    import io

    from spin.cli import eval as eval_cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = eval_cli.main([*argv, "--no-progress", "--workers", "0"])
    return code, err.getvalue()


def test_eval_leaves_out_nan_labels_and_writes_valid_json(data_dir, finished_run, tmp_path):
    # Used to: NaN metrics, a matplotlib crash and an eval JSON with bare NaN tokens.
    import warnings

    _, run = finished_run
    arrays = dict(np.load(data_dir / "test.npz"))
    arrays["pose"][0, 5] = np.nan
    arrays["shape"][1, 0] = np.inf
    bad = tmp_path / "nan.npz"
    np.savez(bad, **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, err = _eval(
            "--checkpoint",
            str(run / "checkpoint.pt"),
            "--dataset",
            str(bad),
            "--images",
            str(data_dir),
            "--out",
            str(tmp_path / "out"),
        )
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "eval_nan.json").read_text(), parse_constant=_no_nan)
    assert report["counts"]["skipped"] == {"non-finite ground truth": 2}
    assert report["counts"]["evaluated"] == len(arrays["imgname"]) - 2
    assert np.isfinite(report["regressor"]["summary_mm"]["pa_mpjpe"])
    assert (tmp_path / "out" / "eval_nan.png").stat().st_size > 1000


def _no_nan(token):
    raise AssertionError(f"invalid JSON token {token}")


def test_eval_refuses_a_checkpoint_with_nan_weights(data_dir, finished_run, tmp_path):
    # Used to: metrics of NaN and the same crash.
    import torch

    _, run = finished_run
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    name = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    broken = tmp_path / "checkpoint.pt"
    torch.save(state, broken)
    code, err = _eval(
        "--checkpoint",
        str(broken),
        "--dataset",
        "synthetic",
        "--data",
        str(data_dir / "test.npz"),
        "--images",
        str(data_dir),
    )
    assert code == 1 and "hold NaN or inf" in err and err.count("\n") == 1, err


# --- 3. A full disk is an error message, never a segfault --------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real disk that fills up. Needs root and mount (CI runs as root)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr!r}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder) -> None:
    """Fill the disk of ``folder`` to the last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 4096, 512, 1):  # unbuffered, down to the last byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)


def _run(args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_fit_dataset_on_a_full_disk_fails_with_one_line(small_disk, tmp_path):
    # Used to: segfault (exit 139) in the final HDF5 merge, 3 times out of 3.
    import shutil

    from spin.fitting.fit_dataset import shard_folder
    from tests.fitting.test_fit_dataset import make_dataset

    data = make_dataset(tmp_path / "data.npz")

    def command(out):
        return ["spin.cli.fit_dataset", str(data), "-o", str(out), "--body-model", "open-lite",
                "--mode", "lm", "--shard-size", "4", "--no-progress"]  # fmt: skip

    elsewhere = tmp_path / "fits.h5"  # fit every shard on a roomy disk, keep the shards
    assert _run([*command(elsewhere), "--keep-shards"]).returncode == 0
    out = small_disk / "fits.h5"
    shutil.copytree(shard_folder(elsewhere), shard_folder(out))
    _fill(small_disk)
    full = _run(command(out))  # every shard is done: only the merge writes
    assert full.returncode == 1, (full.returncode, full.stderr[-2000:])
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    assert len(full.stderr.strip().splitlines()) == 1, full.stderr
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()
    (small_disk / "filler").unlink()
    again = _run(command(out))  # nothing lost: the shards were kept, the merge now succeeds
    assert again.returncode == 0, again.stderr
    assert out.exists()


def test_training_on_a_full_disk_fails_with_one_line(small_disk, data_dir):
    # Used to: HDF5 tracebacks then a segfault writing the fits cache, or torch's "enforce
    # fail ... unexpected pos" writing the checkpoint.
    args = ["spin.cli.train", "--config", str(TINY), "--no-progress",
            f"data.synthetic.out_dir={data_dir}", f"run_dir={small_disk}", *SHORT_RUN,
            "num_steps=2"]  # fmt: skip
    Trainer(tiny_config(data_dir, small_disk / "warmup", *SHORT_RUN), progress=False)  # data
    _fill(small_disk)
    full = _run(args)
    assert full.returncode == 1, (full.returncode, full.stderr[-2000:])
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr, full.stderr


# --- 5. Tiny files cannot ask for huge memory ---------------------------------------------

MAX_RSS_BYTES = 2 * 2**30  # the bound for any command on any input under 10 MB


def _peak_rss(module: str, *argv: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``python -m module argv`` and return it with its peak resident memory (bytes)."""
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = {[module, *argv]!r}\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__')\n"
        "finally:\n"
        "    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
        " file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    peak = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) * 1024
    return done, peak


def _zero_bomb_npy(shape) -> bytes:
    """A .npy member of float64 zeros of ``shape``, compressed: tiny on disk, huge declared."""

    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)}
    )
    return header.getvalue(), int(np.prod(shape)) * 8


def _write_npz_with_bomb(path, arrays, key, shape):
    """``np.savez_compressed(path, **arrays)`` plus a compressed all-zero member ``key``."""
    import zipfile

    np.savez_compressed(path, **arrays)
    header, size = _zero_bomb_npy(shape)
    chunk = bytes(1 << 22)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
            member.write(header)
            for _ in range(size // len(chunk)):
                member.write(chunk)
            member.write(bytes(size % len(chunk)))


def test_an_npz_bomb_in_an_unused_key_costs_no_memory(data_dir, finished_run, tmp_path):
    # Used to: spin-eval peaked at 3.3 GB on a 1.46 MB file.
    _, run = finished_run
    bomb = tmp_path / "bomb.npz"
    _write_npz_with_bomb(bomb, dict(np.load(data_dir / "test.npz")), "junk", (400_000_000,))
    assert bomb.stat().st_size < 10 * 2**20
    done, peak = _peak_rss(
        "spin.cli.eval", "--checkpoint", str(run / "checkpoint.pt"), "--dataset", str(bomb),
        "--images", str(data_dir), "--out", str(tmp_path / "out"), "--no-progress",
        "--workers", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert peak < MAX_RSS_BYTES, f"peak RSS {peak / 2**30:.2f} GiB"
    print(
        f"FAULT npz bomb (3.2 GB declared, {bomb.stat().st_size} bytes): "
        f"peak {peak / 2**20:.0f} MiB"
    )


def test_a_body_model_npz_bomb_is_refused_before_allocating(tmp_path):
    # Used to: 1.7 GB before its "missing keys" error.
    bomb = tmp_path / "model.npz"
    _write_npz_with_bomb(bomb, {"name": np.array("x")}, "v_template", (200_000_000, 3))
    done, peak = _peak_rss(
        "spin.cli.show_body", "--model", str(bomb), "--out", str(tmp_path / "x.png")
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "v_template" in done.stderr and "GiB allowed" in done.stderr
    assert peak < MAX_RSS_BYTES, f"peak RSS {peak / 2**30:.2f} GiB"


def test_a_pickle_cannot_ask_numpy_for_a_huge_array(tmp_path):
    # Used to: a 1.2 KB pickle using the allowed numpy.ndarray asked for 9.25 GiB.
    import pickle

    from spin.body.loading import UnsafeModelFileError, safe_load_pickle

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct

    class Reconstruct:
        def __reduce__(self):
            return (_reconstruct, (np.ndarray, (1_250_000_000,), b"b"))

    class Construct:
        def __reduce__(self):
            return (np.ndarray, ((1_250_000_000,),))

    for payload in (Reconstruct(), Construct()):
        path = tmp_path / "bomb.pkl"
        path.write_bytes(pickle.dumps({"v_template": payload}, protocol=2))
        assert path.stat().st_size < 2000
        with pytest.raises(UnsafeModelFileError, match="refusing to load"):
            safe_load_pickle(path)
    legit = tmp_path / "legit.pkl"
    legit.write_bytes(pickle.dumps({"a": np.arange(12.0).reshape(3, 4)}, protocol=2))
    np.testing.assert_array_equal(safe_load_pickle(legit)["a"], np.arange(12.0).reshape(3, 4))


def test_a_huge_png_is_refused_from_its_header(tmp_path):
    # Used to: a 117 KB PNG of 121 megapixels made spin-demo use 6.7 GB, then crash in OpenGL.
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("L", (11_000, 11_000)).save(path, optimize=True)
    assert path.stat().st_size < 10 * 2**20
    done, peak = _peak_rss("spin.cli.demo", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "megapixels" in done.stderr and "--max-pixels" in done.stderr
    assert peak < MAX_RSS_BYTES
    assert not (tmp_path / "out").exists()


# --- 9. Messages that name the real problem ------------------------------------------------


def test_random_bytes_are_a_damaged_checkpoint_not_code(tmp_path):
    # Used to: "could run code ... altered elsewhere" for random bytes.
    from spin.train.checkpoint import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        load_checkpoint(path)
    assert "run code" not in str(error.value) and "weights_only" not in str(error.value)


def test_a_bad_config_string_in_a_checkpoint_is_named(finished_run, tmp_path):
    # Used to: only "Expecting value: line 1 column 1".
    import torch

    from spin.train.checkpoint import load_checkpoint

    _, run = finished_run
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"] = "not json"
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="saved config is not the JSON spin-train writes"):
        load_checkpoint(path)


def test_object_arrays_get_our_message_not_numpys_hint(synthetic, tmp_path):
    from spin.data.spin_dataset import DatasetFormatError, SpinDataset

    def edit(arrays):
        arrays["imgname"] = arrays["imgname"].astype(object)

    npz, folder = _edited(synthetic, tmp_path, edit)
    with pytest.raises(DatasetFormatError, match="object arrays") as error:
        SpinDataset(npz, folder, img_size=64)
    assert "load it unsafely" not in str(error.value)


# --- 10. No wrong output with exit 0 (spin-demo) --------------------------------------------


def _demo_photo(tmp_path):
    from PIL import Image

    from tests.demo import synthetic_photo, write_coco_keypoints

    photo = synthetic_photo()
    path = tmp_path / "person.png"
    Image.fromarray(photo.image).save(path)
    return path, write_coco_keypoints(tmp_path / "keypoints.json", photo.keypoints)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--focal-length", "inf"], "finite number of pixels"),
        (["--bbox=-1e30,-1e30,-1e29,-1e29"], "outside the"),
        (["--bbox=0,0,1e30,1e30"], "more than 10 times"),
        (["--min-confidence", "2"], "must be in \\[0, 1\\)"),
    ],
)
def test_demo_refuses_values_that_give_wrong_output(tmp_path, args, match):
    # Used to: JSON with null intrinsics and "nan px"; a camera at [0, 0, 0]; exit 0.
    import contextlib
    import re

    from spin.cli import demo

    photo, keypoints = _demo_photo(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        demo.main([str(photo), "--keypoints", str(keypoints), "--out", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 1 and re.search(match, err.getvalue()), err.getvalue()
    assert not (tmp_path / "o").exists()


def test_a_16_bit_greyscale_png_keeps_its_picture(tmp_path):
    # Used to: an all-white overlay (16-bit values clipped to 255).
    from PIL import Image

    from spin.cli.demo import read_image

    ramp = (np.linspace(0, 65535, 64)[None, :] * np.ones((48, 1))).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    image = read_image(path)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert image.min() == 0 and image.max() == 255 and len(np.unique(image)) > 32


def test_a_fifo_is_not_read(tmp_path):
    # Used to: spin-demo blocked forever on a FIFO.
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "spin.cli.demo", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "not a regular file" in done.stderr


def test_demo_names_why_keypoints_are_unusable(tmp_path):
    # Used to: "needs 2 keypoints with confidence > 0.0" for keypoints outside the image.
    from spin.demo.pipeline import DemoConfig, run_demo

    image = np.zeros((100, 120, 3), dtype=np.uint8)
    keypoints = np.tile([500.0, 500.0, 0.9], (17, 1))
    with pytest.raises(ValueError, match="17 outside the 120x100 image"):
        run_demo(image, None, None, keypoints, "coco17", DemoConfig())


# --- 12. Leftovers ---------------------------------------------------------------------------


def test_a_refused_make_synthetic_leaves_no_folders(tmp_path):
    # Used to: empty images/ and parts/ after a refusal.
    done = subprocess.run(
        [sys.executable, "-m", "spin.cli.make_synthetic", "--num", "2", "--out",
         str(tmp_path / "out"), "--body-model", str(tmp_path / "missing.npz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_readme_converter_commands_match_their_usage():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "convert_3dpw.py --root ROOT" in readme and "convert_3dpw.py ROOT" not in readme
    assert "convert_h36m.py --root ROOT" in readme and "convert_h36m.py ROOT" not in readme


def test_eval_on_a_full_disk_leaves_no_partial_report(small_disk, data_dir, finished_run):
    # Used to: an eval JSON (and no PNG) left on the full disk.
    _, run = finished_run
    out = small_disk / "eval"
    out.mkdir()
    _fill(small_disk)
    done = _run(
        ["spin.cli.eval", "--checkpoint", str(run / "checkpoint.pt"), "--dataset", "synthetic",
         "--data", str(data_dir / "test.npz"), "--images", str(data_dir), "--out", str(out),
         "--no-progress", "--workers", "0"]
    )  # fmt: skip
    assert done.returncode == 1 and "No space left on device" in done.stderr, done.stderr[-1500:]
    assert list(out.iterdir()) == []


# --- 8. Every command: one line for what the user can fix, never a traceback ----------------


def test_commands_report_unsafe_models_and_read_only_folders_in_one_line(tmp_path, data_dir):
    # Used to: tracebacks from spin-train (unsafe model, read-only folder) and spin-show-body.
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    model = tmp_path / "evil" / "model.pkl"
    model.parent.mkdir()
    model.write_bytes(pickle.dumps({"v_template": Payload()}))
    show = _run(["spin.cli.show_body", "--model", str(model), "--out", str(tmp_path / "x.png")])
    assert show.returncode == 1 and "refusing to load" in show.stderr, show.stderr[-1500:]
    assert "Traceback" not in show.stderr and "owned" not in show.stdout

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions: use a read-only mount instead
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(locked)])
        if os.access(locked, os.W_OK) or not os.path.ismount(locked):
            pytest.skip("cannot make a read-only folder here")
    try:
        train = _run(
            ["spin.cli.train", "--config", str(TINY), "--no-progress",
             f"data.synthetic.out_dir={data_dir}", f"run_dir={locked}", *SHORT_RUN]
        )  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(locked)], capture_output=True)
    assert train.returncode == 1, train.stderr[-1500:]
    assert "Read-only file system" in train.stderr or "Permission denied" in train.stderr
    assert "Traceback" not in train.stderr


def test_demo_outputs_are_all_written_or_none(tmp_path, monkeypatch):
    # Used to: a full disk left the overlay of a demo whose other outputs failed.
    import contextlib
    import errno

    from spin.cli import demo

    photo, keypoints = _demo_photo(tmp_path)
    real_save_png, calls = demo.save_png, []

    def second_png_fills_the_disk(path, image):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real_save_png(path, image)

    monkeypatch.setattr(demo, "save_png", second_png_fills_the_disk)
    out = tmp_path / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = demo.main([str(photo), "--keypoints", str(keypoints), "--out", str(out)])
    assert code == 1 and "No space left" in err.getvalue()
    assert len(calls) == 2 and list(out.iterdir()) == []  # the overlay was removed again
