"""Image sets people publish (issue 20): RDED's layout, a plain ImageFolder in torchvision's sorted order, mixed
Pillow modes converted, the dry run reading every header, Tiny-ImageNet's class order. Tiny PNG/JPEG files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from labeldistill.config import load_config
from labeldistill.data import check_dataset_options, data_options, load_dataset
from labeldistill.data.imagefolder import load_imagefolder
from labeldistill.data.owned import SORTED_ORDER, check_own_folder, copy_own_files, list_source, load_own_set
from labeldistill.errors import ConfigError, DataError
from labeldistill.layout import RunLayout
from labeldistill.plan.probe import probe_data
from labeldistill.plan.stages import recover_rows
from labeldistill.provenance import StageRef
from labeldistill.main_stages import stage_settings

from test_dataset_archives import WNIDS, _fake_tiny


def _save(path, a, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(a)
    (im.convert(mode) if mode else im).save(path, **kw)


def _rgb(seed, size=8):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_rded_layout_class_is_the_folder_number(tmp_path):
    for c in range(3):
        for i in range(2):
            _save(tmp_path / f"{c:05d}" / f"class{c:05d}_id{i:05d}.jpg", _rgb(10 * c + i), quality=90)
    listing = list_source("folder", tmp_path)
    assert listing.layout == "rded" and listing.class_order == "folder number"
    assert listing.labels == [0, 0, 1, 1, 2, 2] and listing.class_names == ["00000", "00001", "00002"]
    x, y, notes = load_own_set("folder", tmp_path, (3, 8, 8), ["a", "b", "c"])
    assert x.shape == (6, 3, 8, 8) and y.tolist() == [0, 0, 1, 1, 2, 2] and notes["layout"] == "rded"
    assert notes["encoding"] == "copied" and "converted" not in notes
    (tmp_path / "00001" / "class00001_id00000.jpg").rename(tmp_path / "00001" / "class00002_id00009.jpg")
    with pytest.raises(DataError, match="named for class 2 but lies in 00001/"):
        list_source("folder", tmp_path)


def test_plain_imagefolder_in_sorted_order(tmp_path):
    src = tmp_path / "mine"
    for k, c in enumerate(["dog", "cat", "emu"]):  # created unsorted: the order is the sorted names
        _save(src / c / "0.png", np.full((8, 8), 40 * k, np.uint8))
    listing = list_source("folder", src)
    assert listing.layout == "imagefolder" and listing.class_order == SORTED_ORDER
    assert listing.class_names == ["cat", "dog", "emu"] and "class_to_idx.json" not in listing.files
    x, y, notes = load_own_set("folder", src, (1, 8, 8), ["t0", "t1", "t2"])
    assert y.tolist() == [0, 1, 2] and x[:, 0, 0, 0].tolist() == [40, 0, 80]  # cat, dog, emu
    assert notes["class_order"] == SORTED_ORDER and notes["class_names_in_source"] == ["cat", "dog", "emu"]
    out = tmp_path / "run_images"
    copy_own_files(listing, ["t0", "t1", "t2"], out)
    assert json.loads((out / "source_class_to_idx.json").read_text()) == {"cat": 0, "dog": 1, "emu": 2}
    assert json.loads((out / "class_to_idx.json").read_text()) == {"t0": 0, "t1": 1, "t2": 2}
    with pytest.raises(DataError, match="sorted folder names.*add a class_to_idx.json"):
        load_own_set("folder", src, (1, 8, 8), ["emu", "cat", "dog"])  # the teacher's names, another order
    (src / "class_to_idx.json").write_text(json.dumps({"emu": 0, "dog": 1, "cat": 2}))  # explicit wins
    x, y, notes = load_own_set("folder", src, (1, 8, 8), ["emu", "dog", "cat"])
    assert x[:, 0, 0, 0].tolist() == [80, 0, 40] and notes["class_order"] == "class_to_idx.json"


def test_mixed_modes_are_converted_with_a_count(tmp_path):
    a = _rgb(1)
    for i, mode in enumerate(["RGB", "L", "RGBA", "P"]):
        _save(tmp_path / f"{i:05d}" / f"class{i:05d}_id00000.png", a, mode)
    notes = check_own_folder(list_source("folder", tmp_path), (3, 8, 8), list("abcd"))
    assert notes["converted"] == 3 and notes["decode_mode"] == "RGB"
    assert notes["conversion"].startswith("3 of 4 images in") and "converted to RGB (L 1, P 1, RGBA 1)" in notes["conversion"]
    x, _, _ = load_own_set("folder", tmp_path, (3, 8, 8), list("abcd"))
    grey = np.array(Image.fromarray(a).convert("L"))
    assert torch.equal(x[0], torch.from_numpy(a).permute(2, 0, 1)) and torch.equal(x[2], x[0])  # alpha dropped
    assert (x[1] == torch.from_numpy(grey)).all()  # grey → the same value on 3 channels
    x1, _, n1 = load_own_set("folder", tmp_path, (1, 8, 8), list("abcd"))  # a 1-channel teacher: all to L
    assert x1.shape == (4, 1, 8, 8) and n1["converted"] == 3 and n1["decode_mode"] == "L"


def test_imagefolder_dataset_mixes_grey_and_rgb(tmp_path, capsys):
    for c in ("a", "b"):
        _save(tmp_path / c / "0.jpg", _rgb(3), quality=90)
        _save(tmp_path / c / "1.jpg", _rgb(4)[:, :, 0], quality=90)  # a grey JPEG, as in Tiny-ImageNet
    ds = load_imagefolder(tmp_path)
    assert ds.images.shape == (4, 3, 8, 8) and torch.equal(ds.images[1, 0], ds.images[1, 2])
    assert capsys.readouterr().err.strip() == f"note: 2 of 4 images in {tmp_path} converted to RGB (L 2)"
    lazy = load_imagefolder(tmp_path, lazy=True)
    assert lazy.images.mode == "RGB" and torch.equal(lazy.images[:], ds.images)  # same pixels either way
    for f in tmp_path.rglob("0.jpg"):
        _save(f, _rgb(3)[:, :, 1], quality=90)
    assert load_imagefolder(tmp_path, lazy=True).images.mode == "L"  # all grey: one channel


def _dataset_cfg(tmp_path, *extra):
    return load_config(None, ["data.dataset=imagefolder", f"data.root={tmp_path}", f"run_dir={tmp_path / 'run'}",
                              *extra])


def test_dry_run_reads_every_header(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(2):
                _save(tmp_path / split / c / f"{i}.png", np.full((8, 8), 30 * i, np.uint8))
    good = probe_data(_dataset_cfg(tmp_path))
    assert good["shape"] == (1, 8, 8)
    bad = tmp_path / "train" / "b" / "1.png"  # the last file: the old check decoded only the first one
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot read image .*b/1.png"):
        probe_data(_dataset_cfg(tmp_path))
    _save(bad, np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match="is 8x9.*set data.image_size"):
        probe_data(_dataset_cfg(tmp_path))
    assert probe_data(_dataset_cfg(tmp_path, "data.image_size=8"))["shape"] == (1, 8, 8)


def test_dry_run_checks_a_folder_source(tmp_path):
    src = tmp_path / "src"
    for c in range(2):
        for i in range(2):
            _save(src / f"{c:05d}" / f"class{c:05d}_id{i:05d}.jpg", _rgb(c + 5 * i), quality=90)
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"recover.variants={{mine: {{source: folder, path: {src}}}}}",
                             "recover.modes=[mine]"])
    layout = RunLayout(cfg.run_path)
    row = recover_rows(cfg, layout, ["a", "b"], (3, 8, 8))[0]
    assert row["images"] == 4 and row["encoding"] == "copied"
    assert row["source_file_bytes"] == sum(f.stat().st_size for f in src.rglob("*.jpg"))
    last = src / "00001" / "class00001_id00001.jpg"
    last.write_bytes(last.read_bytes()[:100])  # header cut off
    with pytest.raises(DataError, match="cannot read image .*class00001_id00001.jpg"):
        recover_rows(cfg, layout, ["a", "b"], (3, 8, 8))
    last.unlink()
    with pytest.raises(DataError, match="unequal images per class"):
        recover_rows(cfg, layout, ["a", "b"], (3, 8, 8))


def test_tiny_imagenet_sorted_wnids_by_default(tmp_path):
    _fake_tiny(tmp_path / "tiny-imagenet-200", np.random.default_rng(5))
    tr = load_dataset("tiny-imagenet", "train", str(tmp_path))
    assert tr.classes == sorted(WNIDS) == ["n01", "n02", "n03"] and tr.labels.tolist() == [0, 0, 1, 1, 2, 2]
    te = load_dataset("tiny-imagenet", "test", str(tmp_path))
    assert te.labels.tolist() == [0, 0, 1, 2]  # n01 n01 | n02 | n03
    w = load_dataset("tiny-imagenet", "train", str(tmp_path), class_order="wnids")
    assert w.classes == WNIDS
    assert torch.equal(w.images[w.labels == WNIDS.index("n03")], tr.images[tr.labels == 2])  # same files, new index
    with pytest.raises(ConfigError, match="data.class_order"):
        load_dataset("tiny-imagenet", "train", str(tmp_path), class_order="alphabetical")
    with pytest.raises(ConfigError, match="unknown data.class_order 'alpha'"):
        load_config(None, ["data.class_order=alpha"])


def test_class_order_is_in_the_fingerprint():
    tiny = load_config(None, ["data.dataset=tiny-imagenet", "data.root=/nowhere"])
    assert stage_settings(tiny, StageRef("squeeze"))["data.class_order"] == "sorted"  # old Tiny runs: stale
    wn = load_config(None, ["data.dataset=tiny-imagenet", "data.root=/nowhere", "data.class_order=wnids"])
    assert "data.class_order" not in stage_settings(wn, StageRef("squeeze"))  # wnids.txt order: old runs stay valid
    fm = load_config(None, [])
    assert "data.class_order" not in stage_settings(fm, StageRef("squeeze"))  # other datasets keep theirs
    with pytest.raises(ConfigError, match="data.class_order is not supported by dataset 'fashion-mnist'"):
        check_dataset_options("fashion-mnist", data_options(load_config(None, ["data.class_order=wnids"])))


def test_dry_run_reads_the_headers_of_a_lazy_dataset(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    _fake_tiny(root, np.random.default_rng(6))
    cfg = load_config(None, ["data.dataset=tiny-imagenet", f"data.root={root}", "data.lazy=true",
                             f"run_dir={tmp_path / 'run'}"])
    assert probe_data(cfg)["shape"] == (3, 12, 12)
    last = root / "train" / "n03" / "images" / "n03_1.JPEG"
    _save(last, _rgb(1, size=10), quality=90)
    with pytest.raises(DataError, match="n03_1.JPEG is 10x10.*set data.image_size"):
        probe_data(cfg)
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read image .*n03_1.JPEG"):
        probe_data(cfg)
