"""Every bad input gives one line on stderr, exit code 2, nothing partial written, existing outputs untouched."""

import errno
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeldistill import cli
from labeldistill.layout import RunLayout

from conftest import REPO, needs_fmnist

DEMO = str(REPO / "configs" / "fmnist_demo.yaml")


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def _fake_fmnist(folder: Path, n: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, m in (("train", n), ("t10k", n // 2)):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx(rng.integers(0, 255, (m, 28, 28), dtype=np.uint8))))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(m, dtype=np.uint8) % 10)))
    return folder


def _one_line_error(capsys, argv, expect: str) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # progress bars share stderr; the error itself is exactly one line, and no traceback
    lines = [ln.split("\r")[-1] for ln in err.strip().splitlines()]
    errors = [ln for ln in lines if ln.startswith("labeldistill: error:")]
    assert len(errors) == 1 and expect in errors[0] and "Traceback" not in err, err
    return errors[0]


def _squeeze(tmp_path, *overrides):
    return ["squeeze", DEMO, f"run_dir={tmp_path / 'run'}", "squeeze.epochs=1", *overrides]


def test_missing_and_empty_data_folder(tmp_path, capsys):
    _one_line_error(capsys, _squeeze(tmp_path, f"data.root={tmp_path / 'nope'}"), "data folder not found")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, _squeeze(tmp_path, f"data.root={tmp_path / 'empty'}"), "missing train-images-idx3-ubyte")
    assert not (tmp_path / "run" / "teacher").exists()


def test_truncated_and_wrong_magic_idx(tmp_path, capsys):
    root = _fake_fmnist(tmp_path / "fm")
    f = root / "train-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-100]))
    _one_line_error(capsys, _squeeze(tmp_path, f"data.root={root}"), "truncated")
    f.write_bytes(gzip.compress(b"\x01\x02\x08\x03" + bytes(100)))
    _one_line_error(capsys, _squeeze(tmp_path, f"data.root={root}"), "bad magic")
    f.write_bytes(b"not gzip at all")
    _one_line_error(capsys, _squeeze(tmp_path, f"data.root={root}"), "cannot read")


def _imagefolder(root: Path) -> Path:
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("damage, expect", [
    (lambda r: (r / "train" / "a" / "notes.txt").write_text("hi"), "is not an image file"),
    (lambda r: [p.unlink() for p in (r / "train" / "b").iterdir()], "has no images"),
    (lambda r: Image.fromarray(np.zeros((9, 8), np.uint8)).save(r / "train" / "a" / "9.png"), "resize them"),
    (lambda r: (r / "train" / "a" / "9.png").write_bytes(b"\x89PNG broken"), "cannot read image"),
])
def test_bad_imagefolder(tmp_path, capsys, damage, expect):
    root = _imagefolder(tmp_path / "if")
    damage(root)
    _one_line_error(capsys, _squeeze(tmp_path, "data.dataset=imagefolder", f"data.root={root}",
                                     "squeeze.model.args.depth=2"), expect)


@pytest.mark.parametrize("override, expect", [
    ("recover.ipcs=3", "unknown config key 'recover.ipcs'"),
    ("squeeze.epochs=three", "must be int"),
    ("prune.factors=[0.5]", "prune factors must be numbers >= 1"),
    ("recover.ipc=0", "recover.ipc must be >= 1"),
    ("prune.strategies=[entropy-easy]", "unknown prune strategy"),
    ("relabel.logits=int2", "unknown logits format"),  # int8 and int4 are codecs now (issue #15)
    ("squeeze.model.name=vit", "known models: "),
    ("data.dataset=cifar1000", "known datasets: "),
])
def test_bad_config(tmp_path, capsys, override, expect):
    _one_line_error(capsys, _squeeze(tmp_path, override, f"data.root={_fake_fmnist(tmp_path / 'fm')}"), expect)
    assert not (tmp_path / "run" / "teacher").exists()


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "labeldistill.cli", "run", DEMO, "recover.ipcs=1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_incompatible_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"labeldistill_version": "9.0", "layout_version": 99}))
    _one_line_error(capsys, ["run", DEMO, f"run_dir={run}"], "incompatible")


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    _one_line_error(capsys, ["run", DEMO, f"run_dir={blocker / 'run'}", f"data.root={_fake_fmnist(tmp_path / 'fm')}"],
                    "writable")


def test_full_disk(tmp_path, capsys, monkeypatch):
    import labeldistill.resume as resume

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "run.json"))

    monkeypatch.setattr(resume, "atomic_write_json", full)
    _one_line_error(capsys, ["run", DEMO, f"run_dir={tmp_path / 'run'}"], "No space left on device")


@needs_fmnist
def test_store_corruption_and_mismatch(tiny_run, tmp_path, capsys):
    cfg, _ = tiny_run
    lay = RunLayout(cfg.run_path)
    store = tmp_path / "store"
    shutil.copytree(lay.pruned_store("sre2l", 3), store)
    assert cli.main(["store", "verify", str(store)]) == 0
    capsys.readouterr()
    shard = next(store.glob("shard_*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x55
    shard.write_bytes(bytes(data))
    _one_line_error(capsys, ["store", "verify", str(store)], "SHA-256")
    shard.write_bytes(bytes(data[:-9]))
    _one_line_error(capsys, ["store", "info", str(store)], "truncated or altered")
    # a store of the sre2l images offered as the lpld images' labels is refused, naming both fingerprints
    from labeldistill.errors import StoreError
    from labeldistill.validate import validate

    before = sorted(p.name for p in (lay.root / "validate").iterdir())
    with pytest.raises(StoreError, match="belongs to image set"):
        validate(cfg, "lpld", 3, store_path=lay.pruned_store("sre2l", 3), force=True)
    assert sorted(p.name for p in (lay.root / "validate").iterdir()) == before


@needs_fmnist
def test_random_real_with_too_many_ipc(tiny_run, capsys, tmp_path):
    cfg, _ = tiny_run
    run_dir = tmp_path / "run"  # a copy without random_real images (other tests may have made some in the shared run)
    shutil.copytree(cfg.run_path, run_dir, ignore=shutil.ignore_patterns("random_real"))
    _one_line_error(capsys, ["recover", DEMO, f"run_dir={run_dir}", "data.train_subset=2000",
                             "recover.ipc=5000", "--mode", "random_real"], "has only")
    assert not (run_dir / "images" / "random_real").exists()  # nothing partial written


@needs_fmnist
def test_nan_loss_in_recover_names_the_class_and_keeps_finished_work(tiny_run, capsys):
    cfg, _ = tiny_run
    folder = cfg.run_path / "images" / "lpld"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    msg = _one_line_error(capsys, ["recover", DEMO, f"run_dir={cfg.run_path}", *_tiny(cfg), "recover.r_bn=.nan",
                                   "--mode", "lpld", "--force"], "loss became nan")
    assert "classes [0]" in msg
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # existing output untouched


@needs_fmnist
def test_non_finite_labels_stop_training(tiny_run, tmp_path):
    """A store whose logits hold inf (e.g. a broken teacher) stops validate with a clear error."""
    import torch

    from labeldistill.errors import LabelDistillError
    from labeldistill.labels.store import LabelStore, LabelStoreWriter
    from labeldistill.validate import validate

    cfg, _ = tiny_run
    src = LabelStore(RunLayout(cfg.run_path).pruned_store("sre2l", 3))
    meta = {k: v for k, v in src.manifest.items() if k not in ("format", "schema_version", "shards",
                                                                 "component_bytes", "num_steps", "num_entries")}
    w = LabelStoreWriter(tmp_path / "bad", meta)
    for g in src.step_ids:
        rec = src.get(g)
        rec.logits = rec.logits.clone()
        rec.logits[0, 0] = float("inf")
        w.add(rec)
    w.close()
    with pytest.raises(LabelDistillError, match="student loss became nan"):
        validate(cfg, "sre2l", 3, store_path=tmp_path / "bad", force=True)
    assert torch.isfinite(torch.tensor(json.loads(
        next((cfg.run_path / "validate").glob("*/sre2l_x3.json")).read_text())["top1"]))  # earlier result untouched


def test_non_finite_learning_rate_is_a_config_error(tmp_path, capsys):
    _one_line_error(capsys, ["validate", DEMO, f"run_dir={tmp_path}", "validate.lr=.nan"], "validate.lr must be")


def _tiny(cfg):
    from conftest import TINY_OVERRIDES

    return TINY_OVERRIDES
