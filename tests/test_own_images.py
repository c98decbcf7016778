"""Issue #12's done-criterion: a user's distilled images (SRe2L's folder layout, DD-Ranking's tensors) and a
user's teacher checkpoint (torchvision ResNet-18 saved as ``{"state_dict": {"module.<key>": ...}}``) go
through ``labeldistill run`` with one config, with a timm student; a shifted class numbering is refused."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

from labeldistill.cli import main
from labeldistill.config import ModelConfig, load_config
from labeldistill.data import load_dataset, normalize
from labeldistill.data.owned import list_source, load_own_set
from labeldistill.data.synthetic import image_bytes, image_fingerprint, load_synthetic
from labeldistill.errors import DataError
from labeldistill.models import build_model

from conftest import needs_fmnist

pytestmark = needs_fmnist
IPC = 2


@pytest.fixture(scope="session")
def own_set(tmp_path_factory):
    """A torchvision ResNet-18 teacher trained briefly on 2,000 Fashion-MNIST images (DDP-style checkpoint), and
    ``IPC`` training images per class that it classifies correctly (so the mapping check's outcome is certain)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait: 7x the CPU time
    try:
        return _train_teacher_and_pick(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _train_teacher_and_pick(tmp_path_factory):
    torch.manual_seed(0)
    train = load_dataset("fashion-mnist", "train")
    model = build_model(ModelConfig("torchvision:resnet18"), 10, (1, 28, 28))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    x_of = lambda idx: normalize(train.images[idx].float() / 255, train.mean, train.std)  # noqa: E731
    model.train()
    for _ in range(20):
        idx = torch.randint(0, 2000, (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x_of(idx)), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # BN statistics of the final weights (20 steps are too few for the running averages)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for i in range(0, 512, 128):
            model(x_of(torch.arange(i, i + 128)))
        model.eval()
        pred = torch.cat([model(x_of(torch.arange(i, i + 250))).argmax(1) for i in range(0, 2000, 250)])
    right = (pred == train.labels[:2000]).nonzero().flatten()
    picks = torch.cat([right[train.labels[right] == c][:IPC] for c in range(10)])
    assert len(picks) == 10 * IPC, "the teacher should get IPC training images of every class right"
    root = tmp_path_factory.mktemp("own")
    ckpt = root / "teacher.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 1}, ckpt)
    return ckpt, train.images[picks], train.labels[picks], root


def write_sre2l(folder, images, labels, shift=0):
    """SRe2L's layout: ``new{c:03d}/class{c:03d}_id{i:03d}.png`` with the class numbers shifted by ``shift``."""
    for i, (im, y) in enumerate(zip(images, labels)):
        c = (int(y) + shift) % 10
        (folder / f"new{c:03d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[0].numpy()).save(folder / f"new{c:03d}" / f"class{c:03d}_id{i:03d}.png")
    return folder


def write_config(path, run_dir, ckpt, variants):
    cfg = {
        "name": "own", "run_dir": str(run_dir), "device": "cpu", "threads": 1,
        "data": {"dataset": "fashion-mnist", "train_subset": 500, "test_subset": 300},
        "squeeze": {"model": {"name": "torchvision:resnet18", "args": {}}, "checkpoint": str(ckpt)},
        "recover": {"variants": variants, "modes": list(variants)},
        "relabel": {"epochs": 4, "batch_size": 10, "steps_per_shard": 4},
        "prune": {"factors": [1, 10]},
        "validate": {"model": {"name": "timm:resnet18", "args": {}}, "epochs": 2, "eval_batch_size": 300},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def own_run(own_set):
    """``labeldistill run`` on the SRe2L folder (mode ``mine``) and the same images as DD-Ranking tensors
    (mode ``dd``, shuffled, float in [0, 1])."""
    ckpt, images, labels, root = own_set
    folder = write_sre2l(root / "sre2l", images, labels)
    (root / "dd").mkdir()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    torch.save(images[perm].float() / 255, root / "dd" / "images.pt")
    torch.save(labels[perm].clone(), root / "dd" / "labels.pt")
    cfg = write_config(root / "own.yaml", root / "run", ckpt, {"mine": {"source": "folder", "path": str(folder)},
                                                                "dd": {"source": "tensor", "path": str(root / "dd")}})
    assert main(["run", str(cfg)]) == 0
    return cfg, root / "run", folder


def test_own_folder_and_teacher_through_run(own_run):
    _, run_dir, folder = own_run
    res = json.loads((run_dir / "results.json").read_text())
    assert res["teacher"]["model"] == "torchvision:resnet18" and res["teacher"]["top1"] > 0.3
    rows = {(r["recover"], r["prune_factor"]): r for r in res["rows"]}
    assert set(rows) == {(m, f) for m in ("mine", "dd") for f in (1.0, 10.0)}
    assert all(r["source"] == ("folder" if m == "mine" else "tensor") and r["ipc"] == IPC and r["student"] == "timm:resnet18"
               for (m, _), r in rows.items())
    meta = json.loads((run_dir / "images" / "mine" / "images.json").read_text())
    assert meta["source"] == "folder" and meta["layout"] == "sre2l" and meta["path"] == str(folder.resolve())
    assert meta["ipc"] == IPC and meta["teacher_top1_on_images"] == 1.0 and len(meta["source_fingerprint"]) == 16
    assert "resized" not in meta
    assert len(list((run_dir / "images" / "mine").rglob("*.png"))) == 10 * IPC
    stages = json.loads((run_dir / "stages.json").read_text())
    assert "class-stats" not in stages and not (run_dir / "class_stats").exists()  # no mode optimises images
    assert stages["recover[mine]"]["settings"]["recover.source_fingerprint"] == meta["source_fingerprint"]


def test_tensor_source_gives_the_same_pixels(own_run):
    _, run_dir, _ = own_run
    mine = json.loads((run_dir / "images" / "mine" / "images.json").read_text())
    dd = json.loads((run_dir / "images" / "dd" / "images.json").read_text())
    assert dd["source"] == "tensor" and dd["layout"] == "tensor" and dd["ipc"] == IPC and "quantised" in dd
    sets = [load_synthetic(run_dir / "images" / m, (0.5,), (0.5,))[0] for m in ("mine", "dd")]
    assert [d.labels.tolist() for d in sets] == [torch.arange(10).repeat_interleave(IPC).tolist()] * 2
    pixels = [sorted((int(y), x.numpy().tobytes()) for x, y in zip(d.images, d.labels)) for d in sets]
    assert pixels[0] == pixels[1]  # class-major; exact uint8 after the float round trip (order within a class: the set's)
    assert dd["teacher_top1_on_images"] == mine["teacher_top1_on_images"] == 1.0
    out = run_dir.parent / "export_mine"
    assert main(["export", str(run_dir), "--format", "ddranking", "--mode", "mine", "--out", str(out)]) == 0
    assert torch.load(out / "images.pt").shape == (10 * IPC, 1, 28, 28)


def test_changed_folder_is_stale(own_run, capsys):
    cfg, _, folder = own_run
    png = sorted(folder.rglob("*.png"))[0]
    before = png.read_bytes()
    a = Image.open(png).convert("L")
    a.point(lambda v: 255 - v).save(png)
    try:
        assert main(["run", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert "recover.source_fingerprint" in err and "--force" in err and len(err.splitlines()) == 1
    finally:
        png.write_bytes(before)


def test_dry_run_skips_class_stats(own_run, capsys):
    cfg, _, _ = own_run
    assert main(["run", str(cfg), "--dry-run", "--no-probe", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in plan["stages"]][:2] == ["squeeze", "recover[mine]"]
    assert plan["recover"][0]["images"] == 10 * IPC and plan["storage"]["class_stats_bytes"] == 0


def test_shifted_class_numbering_is_refused(own_set, tmp_path, capsys):
    ckpt, images, labels, _ = own_set
    folder = write_sre2l(tmp_path / "shifted", images, labels, shift=1)
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", ckpt, {"mine": {"source": "folder", "path": str(folder)}})
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class mapping" in err[0] and "new000" in err[0], err
    assert not (tmp_path / "run" / "images" / "mine").exists()


def test_imagefolder_class_to_idx_or_sorted_order(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        Image.new("L", (28, 28)).save(tmp_path / c / "0.png")
    assert list_source("folder", tmp_path).class_names == ["cat", "dog"]  # torchvision's sorted order
    (tmp_path / "class_to_idx.json").write_text(json.dumps({"dog": 0, "cat": 1}))
    own = load_own_set("folder", tmp_path, (1, 28, 28), ["dog", "cat"])
    y, notes = own.labels, own.notes
    assert y.tolist() == [0, 1] and notes["layout"] == "imagefolder" and notes["ipc"] == 1
    with pytest.raises(DataError, match="index 0 but the teacher's index of 'dog' is 1"):
        load_own_set("folder", tmp_path, (1, 28, 28), ["cat", "dog"])


def test_jpeg_set_is_kept_as_the_user_has_it(own_set, tmp_path, capsys):
    """An RDED-layout JPEG set (one file saved as RGB for the 1-channel teacher) is copied as it is: the run's
    image bytes are the user's, and relabel / validate decode the pixels recover checked and fingerprinted."""
    ckpt, images, labels, _ = own_set
    src = tmp_path / "rded"
    for i, (im, y) in enumerate(zip(images, labels)):
        c = int(y)
        (src / f"{c:05d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[0].numpy()).convert("RGB" if i == 0 else "L").save(
            src / f"{c:05d}" / f"class{c:05d}_id{i:05d}.jpg", quality=95)
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", ckpt, {"jpg": {"source": "folder", "path": str(src)}})
    assert main(["squeeze", str(cfg)]) == 0 and main(["recover", str(cfg)]) == 0
    assert f"note: recover[jpg]: 1 of {10 * IPC} images in {src} converted to L (RGB 1)" in capsys.readouterr().err
    out = tmp_path / "run" / "images" / "jpg"
    theirs = sorted(f.read_bytes() for f in src.rglob("*.jpg"))
    assert sorted(f.read_bytes() for f in out.rglob("*.jpg")) == theirs and not list(out.rglob("*.png"))
    assert image_bytes(out) == sum(len(b) for b in theirs)
    data, meta = load_synthetic(out, (0.5,), (0.5,))
    assert meta["layout"] == "rded" and meta["encoding"] == "copied" and meta["converted"] == 1
    assert meta["source_file_bytes"] == image_bytes(out)
    x, y, _ = load_own_set("folder", src, (1, 28, 28), [str(c) for c in range(10)])
    assert torch.equal(data.images, x) and torch.equal(data.labels, y)
    assert image_fingerprint(data.images, data.labels) == meta["fingerprint"]


def test_unequal_counts_and_sizes(tmp_path):
    torch.save(torch.rand(3, 1, 32, 32), tmp_path / "images.pt")
    torch.save(torch.tensor([0, 1, 1]), tmp_path / "labels.pt")
    with pytest.raises(DataError, match="unequal images per class"):
        load_own_set("tensor", tmp_path, (1, 28, 28), ["a", "b"])
    torch.save(torch.tensor([1, 0, 2]), tmp_path / "labels.pt")
    own = load_own_set("tensor", tmp_path, (1, 28, 28), ["a", "b", "c"])
    x, y, notes = own.images, own.labels, own.notes
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.uint8 and y.tolist() == [0, 1, 2]
    assert notes["resized"]["from"] == [[32, 32]] and notes["resized"]["to"] == [28, 28]
    torch.save(torch.rand(3, 1, 28, 28) * 2 - 1, tmp_path / "images.pt")
    with pytest.raises(DataError, match=r"pixels in \[0, 1\]"):
        load_own_set("tensor", tmp_path, (1, 28, 28), ["a", "b", "c"])


def test_variant_switches_are_checked():
    from labeldistill.errors import ConfigError

    with pytest.raises(ConfigError, match="needs path"):
        load_config(None, ["recover.variants={mine: {source: folder}}", "recover.modes=[mine]"])
    with pytest.raises(ConfigError, match="applies to source: synthesis only"):
        load_config(None, ["recover.variants={mine: {source: tensor, path: x, batching: class_wise}}",
                           "recover.modes=[mine]"])
