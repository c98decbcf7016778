"""Random byte flips in the header of every file format labeldistill reads give one project error, never a crash.

Each reader gets a tiny valid file, then hypothesis flips a few bytes of its structure (the IDX header inside a
valid gzip stream, the pickle opcodes of a CIFAR batch outside its pixel block, the zip/pickle structure of
``images.pt``, a label shard's safetensors header and its ``manifest.json``, ``images.json`` and
``class_to_idx.json``). The reader must either succeed with well-formed output or raise ``DataError`` /
``StoreError`` (one line) — never ``IndexError``, ``ValueError``, ``RuntimeError``, ``struct.error``,
``UnpicklingError`` or the like, which the CLI would print as a traceback.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeldistill import cli
from labeldistill.data import load_dataset
from labeldistill.data.owned import load_own_set
from labeldistill.data.synthetic import load_synthetic, save_imagefolder
from labeldistill.errors import DataError, StoreError
from labeldistill.labels.store import LabelStore, LabelStoreWriter, StepRecord

from conftest import REPO

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_N", 80)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _flips(size: int) -> st.SearchStrategy:
    """1–3 (position, xor mask) pairs within the first ``size`` bytes."""
    return st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=3)


def _flip(raw: bytes, flips: list[tuple[int, int]], positions: list[int] | None = None) -> bytes:
    out = bytearray(raw)
    for pos, mask in flips:
        out[positions[pos % len(positions)] if positions else pos % len(out)] ^= mask
    return bytes(out)


# ---- IDX (fashion-mnist) -------------------------------------------------------------------------------------

def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


IDX_FILES = {"train-images-idx3-ubyte": _idx(np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)),
             "train-labels-idx1-ubyte": _idx(np.array([0, 1, 2, 9], dtype=np.uint8))}


@FUZZ
@given(which=st.sampled_from(sorted(IDX_FILES)), flips=_flips(16), gz=st.booleans())
def test_idx_header_flips_in_a_valid_gzip_stream(tmp_path_factory, which, flips, gz):
    root = tmp_path_factory.mktemp("idx")
    for name, raw in IDX_FILES.items():
        header = 4 + 4 * raw[3]
        data = _flip(raw, flips, list(range(header))) if name == which else raw
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    try:
        ds = load_dataset("fashion-mnist", "train", str(root))
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert ds.images.dim() == 4 and len(ds) == len(ds.images) and int(ds.labels.max()) < ds.num_classes


@pytest.mark.parametrize("pos, mask", [(3, 0x02), (11, 0x08)])  # 3 dimensions → 1; 28 rows → 20
def test_idx_corrupt_dimension_byte_through_the_cli(tmp_path, capsys, pos, mask):
    """A valid gzip stream whose IDX header has a corrupt dimension byte: one line, exit 2, nothing written."""
    root = tmp_path / "fm"
    root.mkdir()
    for prefix in ("train", "t10k"):
        for name, raw in IDX_FILES.items():
            data = _flip(raw, [(pos, mask)]) if "images" in name else raw
            (root / (name.replace("train", prefix) + ".gz")).write_bytes(gzip.compress(data))
    code = cli.main(["squeeze", str(REPO / "configs" / "fmnist_demo.yaml"), f"data.root={root}",
                     f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "images-idx3-ubyte" in err
    assert not (tmp_path / "run" / "teacher").exists()


# ---- CIFAR pickle batches ------------------------------------------------------------------------------------

def _cifar() -> dict[str, tuple[bytes, bytes | None]]:
    """A tiny CIFAR-10 train split: file name → (pickle bytes, pixel bytes inside it)."""
    rng = np.random.default_rng(0)
    files = {}
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(1, 3072), dtype=np.uint8)
        files[f"data_batch_{i}"] = ({"batch_label": "b", "labels": [i % 10], "data": x, "filenames": ["a.png"]}, x)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    files["batches.meta"] = ({"num_cases_per_batch": 1, "label_names": names, "num_vis": 3072}, None)
    return {k: (pickle.dumps(obj, protocol=2), None if x is None else x.tobytes()) for k, (obj, x) in files.items()}


CIFAR = _cifar()


@FUZZ
@given(which=st.sampled_from(sorted(CIFAR)), flips=_flips(4096))
def test_cifar_pickle_flips(tmp_path_factory, which, flips):
    root = tmp_path_factory.mktemp("cifar")
    d = root / "cifar-10-batches-py"
    d.mkdir()
    for name, (raw, pixels) in CIFAR.items():
        if name == which:
            start = raw.find(pixels) if pixels else -1  # structure only: not the pixel block
            outside = [i for i in range(len(raw)) if start < 0 or not start <= i < start + len(pixels)]
            raw = _flip(raw, flips, outside)
        (d / name).write_bytes(raw)
    try:
        ds = load_dataset("cifar10", "train", str(root))
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert ds.images.shape[1:] == (3, 32, 32) and int(ds.labels.max()) < ds.num_classes


# ---- images.pt / labels.pt (tensor image sources) ----------------------------------------------------------

@pytest.fixture(scope="module")
def tensor_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt")
    torch.save(torch.rand(4, 1, 8, 8), d / "images.pt")
    torch.save(torch.tensor([0, 1, 0, 1]), d / "labels.pt")
    return {n: (d / n).read_bytes() for n in ("images.pt", "labels.pt")}


@FUZZ
@given(which=st.sampled_from(["images.pt", "labels.pt"]), flips=_flips(1 << 16))
def test_tensor_source_flips(tmp_path_factory, tensor_files, which, flips):
    d = tmp_path_factory.mktemp("src")
    for name, raw in tensor_files.items():
        (d / name).write_bytes(_flip(raw, flips) if name == which else raw)
    try:
        x, y, _ = load_own_set("tensor", d, (1, 8, 8), ["a", "b"])
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and len(y) == len(x)


def test_tensor_source_with_zero_images_is_a_data_error(tmp_path):
    """A flipped size byte can leave a well-formed but empty tensor: refused, not a reduction crash."""
    torch.save(torch.rand(0, 1, 8, 8), tmp_path / "images.pt")
    torch.save(torch.zeros(0, dtype=torch.int64), tmp_path / "labels.pt")
    with pytest.raises(DataError, match="non-empty tensor"):
        load_own_set("tensor", tmp_path, (1, 8, 8), ["a", "b"])


# ---- label store: shard header + manifest ------------------------------------------------------------------

def _store(path: Path) -> LabelStore:
    g = torch.Generator().manual_seed(0)
    recs = [StepRecord(step_id=s, sample_idx=torch.arange(4) + s, boxes=torch.tensor([[0, 0, 8, 8]] * 4),
                       flips=torch.tensor([True, False, True, False]), mix=None,
                       logits=torch.randn(4, 3, generator=g).half()) for s in range(3)]
    meta = {"num_images": 8, "image_hw": [8, 8], "input_size": [8, 8], "cutmix": False, "num_classes": 3,
            "epochs": 1, "batch_size": 4, "steps_per_epoch": 3, "image_fingerprint": "img",
            "teacher_fingerprint": "tea", "normalization": {"mean": [0.0], "std": [1.0]}}
    w = LabelStoreWriter(path, meta, steps_per_shard=2)
    w.extend(recs)
    return w.close()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("store") / "store").path


def _read_all(path: Path) -> None:
    store = LabelStore(path)
    for g in store.step_ids:
        rec = store.get(g)
        assert rec.logits.shape[0] == len(rec.sample_idx) == len(rec.flips)


@FUZZ
@given(shard=st.integers(0, 1), flips=_flips(1 << 16))
def test_label_shard_header_flips(tmp_path_factory, store_dir, shard, flips):
    path = tmp_path_factory.mktemp("s") / "store"
    shutil.copytree(store_dir, path)
    f = sorted(path.glob("*.safetensors"))[shard]
    raw = f.read_bytes()
    header = 8 + struct.unpack("<Q", raw[:8])[0]
    f.write_bytes(_flip(raw, flips, list(range(header))))
    try:
        _read_all(path)
    except StoreError as e:
        assert "\n" not in str(e)


@FUZZ
@given(flips=_flips(1 << 16))
def test_label_manifest_flips(tmp_path_factory, store_dir, flips):
    path = tmp_path_factory.mktemp("s") / "store"
    shutil.copytree(store_dir, path)
    f = path / "manifest.json"
    f.write_bytes(_flip(f.read_bytes(), flips))
    try:
        _read_all(path)
    except StoreError as e:
        assert "\n" not in str(e)


# ---- images.json + class_to_idx.json (distilled image sets) ------------------------------------------------

@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("img") / "sre2l"
    save_imagefolder(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]), ["a", "b"], d)
    (d / "images.json").write_text(json.dumps({"mode": "sre2l", "source": "synthesis", "ipc": 2,
                                               "fingerprint": "0123456789abcdef", "num_images": 4}))
    return d


@FUZZ
@given(which=st.sampled_from(["images.json", "class_to_idx.json"]), flips=_flips(1 << 16))
def test_image_set_json_flips(tmp_path_factory, image_set, which, flips):
    d = tmp_path_factory.mktemp("i") / "sre2l"
    shutil.copytree(image_set, d)
    (d / which).write_bytes(_flip((d / which).read_bytes(), flips))
    try:
        data, meta = load_synthetic(d, (0.5,), (0.5,))
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(meta["fingerprint"], str) and isinstance(meta["ipc"], int) and len(data) == 4
