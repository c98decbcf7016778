"""Large inputs: lazy ImageFolder, DataLoader workers, ``run --dry-run`` on the ImageNet configs, teachers from
torchvision-format checkpoints, and the storage estimator against real stores."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from labeldistill.cli import main
from labeldistill.data import iter_batches, load_split
from labeldistill.training import evaluate
from labeldistill.config import load_config
from labeldistill.data.imagefolder import load_imagefolder
from labeldistill.errors import ConfigError, DataError
from labeldistill.labels.prune import prune_store
from labeldistill.data import ImageSet
from labeldistill.labels.relabel import StepPlan, sample_step, store_meta
from labeldistill.labels.store import LabelStore, LabelStoreWriter
from labeldistill.models import create_model
from labeldistill.plan import estimate_store_bytes, png_upper_bound

from conftest import REPO

CLASSES = ["zebra", "ant", "moth"]  # class_to_idx.json below makes this the order, not the alphabetical one


def make_folder(root, sizes=((20, 14), (13, 19), (16, 16), (25, 11)), fmt="PNG", splits=("train", "val")):
    """A small RGB ImageFolder with images of mixed sizes and an explicit class_to_idx.json per split."""
    rng = np.random.default_rng(0)
    for split in splits:
        d0 = root / split
        for ci, c in enumerate(CLASSES):
            d = d0 / c
            d.mkdir(parents=True)
            for i, (w, h) in enumerate(sizes):
                a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                a[..., ci] = 40 * (i + 1)  # class- and image-dependent content
                Image.fromarray(a).save(d / f"{i}.{'png' if fmt == 'PNG' else 'jpg'}", format=fmt)
        (d0 / "class_to_idx.json").write_text(json.dumps({c: i for i, c in enumerate(CLASSES)}))
    return root


def tree_state(root):
    """Every path under ``root`` with its size and mtime (to prove nothing was written)."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_lazy_imagefolder_equals_in_memory_with_resize(tmp_path):
    folder = make_folder(tmp_path / "if", fmt="JPEG") / "train"
    eager = load_imagefolder(folder, image_size=12, resize=14)
    lazy = load_imagefolder(folder, image_size=12, resize=14, lazy=True)
    assert lazy.is_lazy and not eager.is_lazy
    assert lazy.classes == eager.classes == CLASSES
    assert torch.equal(lazy.labels, eager.labels) and lazy.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert lazy.shape == eager.shape == (3, 12, 12) and lazy.images.shape == eager.images.shape
    assert torch.equal(lazy.images[:], eager.images)
    idx = torch.tensor([11, 0, 5, 5, 3])  # unsorted, repeated
    assert torch.equal(lazy.images[idx], eager.images[idx])
    assert torch.equal(lazy.images[eager.labels == 1], eager.images[eager.labels == 1])
    assert torch.equal(lazy.images[7], eager.images[7]) and torch.equal(lazy.images[-1], eager.images[-1])
    assert torch.equal(lazy.images[2:9:3], eager.images[2:9:3])
    # Fewer images than the stats sample: the lazy estimate uses all of them, like the in-memory loader.
    np.testing.assert_allclose(lazy.mean, eager.mean, rtol=1e-5)
    np.testing.assert_allclose(lazy.std, eager.std, rtol=1e-5)
    sub_l, sub_e = lazy.subset(6, seed=3), eager.subset(6, seed=3)
    assert sub_l.is_lazy and len(sub_l.images) == 6  # a view: nothing decoded yet
    assert torch.equal(sub_l.labels, sub_e.labels) and torch.equal(sub_l.images[:], sub_e.images)
    assert torch.equal(sub_l.subset(3, seed=1).images[:], sub_e.subset(3, seed=1).images)
    # Resize + centre crop: a 20x14 image → shorter side 14 → 20x14 → centre 12x12 crop.
    ref = np.asarray(Image.open(folder / "zebra" / "0.jpg").convert("RGB").resize((20, 14), Image.BILINEAR))
    np.testing.assert_array_equal(eager.images[0].permute(1, 2, 0).numpy(), ref[1:13, 4:16])


def test_lazy_native_size_is_checked_on_decode(tmp_path):
    folder = make_folder(tmp_path / "if", sizes=((10, 10), (10, 10), (11, 10))) / "train"
    with pytest.raises(DataError, match="resize them"):
        load_imagefolder(folder)
    lazy = load_imagefolder(folder, lazy=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert lazy.shape == (3, 10, 10) and lazy.mean == (0.5,) * 3
    assert lazy.images[:2].shape == (2, 3, 10, 10)
    with pytest.raises(DataError, match="set data.image_size"):
        lazy.images[2]


def _cfg(tmp_path, root, *extra):
    return load_config(REPO / "configs" / "fmnist_demo.yaml", [
        "data.dataset=imagefolder", f"data.root={root}", "data.image_size=16", f"run_dir={tmp_path / 'run'}",
        "device=cpu", "squeeze.model.args.depth=2", *extra])


def test_workers_decode_the_same_batches_and_report_errors_in_one_line(tmp_path):
    root = make_folder(tmp_path / "if")
    eager = load_split(_cfg(tmp_path, root), "test")
    lazy = load_split(_cfg(tmp_path, root, "data.lazy=true", "data.workers=2"), "test")
    assert lazy.is_lazy and lazy.meta["workers"] == 2 and eager.mean == pytest.approx(lazy.mean)
    batches = [torch.tensor([3, 1]), slice(4, 9), torch.tensor([11])]
    got = list(iter_batches(lazy, batches))  # two worker processes
    want = list(iter_batches(eager, batches))
    assert len(got) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))
    torch.manual_seed(0)
    model = create_model("convnet", num_classes=3, in_channels=3, image_size=16, width=8, depth=2)
    acc_l = evaluate(model, lazy, eager.mean, eager.std, torch.device("cpu"), batch_size=5)
    acc_e = evaluate(model, eager, eager.mean, eager.std, torch.device("cpu"), batch_size=5)
    assert acc_l == acc_e
    (root / "val" / "ant" / "2.png").write_bytes(b"\x89PNG broken")  # damaged after the file list was made
    with pytest.raises(DataError) as e:
        list(iter_batches(lazy, [slice(0, 12)], workers=2))
    assert "cannot read image" in str(e.value) and "2.png" in str(e.value) and "\n" not in str(e.value)


def test_lazy_is_imagefolder_only_and_data_keys_are_range_checked(tmp_path):
    cfg = load_config(REPO / "configs" / "fmnist_demo.yaml", ["data.lazy=true"])
    with pytest.raises(ConfigError, match="data.lazy is not supported by dataset 'fashion-mnist'"):
        load_split(cfg, "test")
    for bad, msg in [("data.resize=20", "needs data.image_size"), ("data.image_size=0", ">= 1"),
                     ("data.mean=[0.5]", "both data.mean and data.std"), ("data.workers=-1", ">= 0")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(REPO / "configs" / "fmnist_demo.yaml", [bad])


def test_lazy_squeeze_trains_the_same_teacher_as_in_memory(tmp_path):
    """Decoding in worker processes changes nothing: same batches, same augmentation draws, same weights."""
    from labeldistill.squeeze import squeeze

    root = make_folder(tmp_path / "if", fmt="JPEG")
    fps = {}
    for name, extra in (("lazy", ["data.lazy=true", "data.workers=2"]), ("eager", [])):
        cfg = _cfg(tmp_path, root, "squeeze.epochs=2", "squeeze.batch_size=5", "squeeze.model.args.width=8",
                   "squeeze.warmup_epochs=1", *extra, f"run_dir={tmp_path / name}")
        info = squeeze(cfg)
        fps[name] = (info["fingerprint"], info["top1"], info["mean"])
    assert fps["lazy"] == fps["eager"]


def test_resnet50_teacher_from_torchvision_state_dict(tmp_path):
    """squeeze.checkpoint loads a torchvision-format ResNet-50 unchanged; lazy + workers class-stats equal in-memory."""
    from labeldistill.bnstats import class_stats
    from labeldistill.squeeze import squeeze

    root = make_folder(tmp_path / "if", fmt="JPEG")
    torch.manual_seed(1)
    ref = create_model("resnet50", num_classes=3, in_channels=3, image_size=32, stem="imagenet")
    with torch.no_grad():  # non-trivial BN buffers, as in a trained checkpoint
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    sd = ref.state_dict()
    assert "layer4.2.bn3.running_var" in sd and "fc.weight" in sd  # torchvision key layout
    ckpt = tmp_path / "resnet50.pth"
    torch.save(sd, ckpt)
    common = ["squeeze.model={name: resnet50, args: {stem: imagenet}}", f"squeeze.checkpoint={ckpt}", "squeeze.force_teacher=true",
              "data.image_size=32", "data.resize=36", "class_stats.batch_size=5", "squeeze.crop_scale=[0.5, 1.0]"]
    runs = {}
    for name, extra in (("lazy", ["data.lazy=true", "data.workers=2"]), ("eager", [])):
        cfg = _cfg(tmp_path, root, *common, *extra, f"run_dir={tmp_path / name}")
        info = squeeze(cfg)
        assert info["model"] == "resnet50" and info["epochs"] == 0 and info["shape"] == [3, 32, 32]
        saved = load_file(str(tmp_path / name / "teacher" / "model.safetensors"))
        assert saved.keys() == sd.keys()
        for k, v in sd.items():
            assert torch.equal(saved[k], v), k
        runs[name] = (info, load_file(str(class_stats(cfg))))
    assert runs["lazy"][0]["top1"] == runs["eager"][0]["top1"]
    stats_l, stats_e = runs["lazy"][1], runs["eager"][1]
    assert stats_l.keys() == stats_e.keys() and torch.equal(stats_l["class_counts"], torch.tensor([4.0, 4.0, 4.0]))
    for k in stats_l:
        torch.testing.assert_close(stats_l[k], stats_e[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", ["imagenet1k_lpld.yaml", "tiny_imagenet_lpld.yaml"])
def test_dry_run_on_imagenet_configs_writes_nothing(tmp_path, capsys, config):
    root = make_folder(tmp_path / "if", fmt="JPEG" if config.startswith("imagenet") else "PNG")
    before = tree_state(tmp_path)
    run_dir = tmp_path / "run"
    args = ["run", str(REPO / "configs" / config), "--dry-run", "--no-probe", f"data.root={root}", f"run_dir={run_dir}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "nothing trained, nothing written" in out and "planned work:" in out
    for stage in ("squeeze", "class-stats", "recover[sre2l]", "recover[lpld]", "relabel[lpld]", "prune", "validate"):
        assert f"  {stage}" in out, stage
    assert "x40" in out and "reference" in out and "upper bound" in out
    assert tree_state(tmp_path) == before and not run_dir.exists()

    assert main(args + ["--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    cfg = load_config(REPO / "configs" / config)
    n = 3 * cfg.recover.ipc
    assert plan["num_classes"] == 3 and plan["data"]["splits"]["train"]["images"] == 12
    side = 224 if config.startswith("imagenet") else 64
    assert plan["image_shape"] == [3, side, side] and plan["lazy"] == config.startswith("imagenet")
    full = next(r for r in plan["labels"] if r["tag"] == "full")
    assert full["entries"] == n * cfg.relabel.epochs and full["components"]["logits"] == 2 * 3 * n * cfg.relabel.epochs
    assert full["components"]["crop"] == 4 * n * cfg.relabel.epochs  # uint8 boxes up to 255 px
    x40 = next(r for r in plan["labels"] if r["tag"] == "x40")
    assert x40["steps"] == full["steps"] // 40 and x40["entries"] < full["entries"] / 30  # prefix pool: floor
    assert x40["floor"] < full["floor"] / 30 and x40["reference_layout"] < full["reference_layout"] / 30
    assert plan["storage"]["image_raw_bytes"] == 3 * side * side
    assert len(plan["validate"]) == 2 * 4 and tree_state(tmp_path) == before


def test_dry_run_reports_bad_paths_in_one_line(tmp_path, capsys):
    root = make_folder(tmp_path / "if")
    cfg = str(REPO / "configs" / "imagenet1k_lpld.yaml")
    cases = [
        ([f"data.root={tmp_path / 'missing'}"], "data folder not found"),
        ([f"data.root={root}", f"squeeze.checkpoint={tmp_path / 'r18.pth'}"], "teacher checkpoint not found"),
        # a single-split folder: its test split would be its training images, so only with data.test_holdout
        ([f"data.root={root / 'val'}", "data.lazy=false", "data.resize=null", "data.image_size=16"],
         "has no test/ or val/ folder"),
        ([f"data.root={root / 'val'}", "data.lazy=false", "data.resize=null", "data.image_size=16",
          "data.test_holdout=3"], None),
        ([f"data.root={root / 'val'}", "data.lazy=false", "data.resize=null", "data.image_size=null",
          "data.test_holdout=3"], "set data.image_size"),  # mixed sizes: the run would refuse them (every header read)
    ]
    for extra, msg in cases:
        code = main(["run", cfg, "--dry-run", "--no-probe", f"run_dir={tmp_path / 'run'}", *extra])
        err = capsys.readouterr().err
        if msg is None:
            assert code == 0
            continue
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    wrong = create_model("resnet18", num_classes=10, in_channels=3, image_size=32, stem="imagenet")
    torch.save(wrong.state_dict(), tmp_path / "r18.pth")
    assert main(["run", cfg, "--dry-run", "--no-probe", f"run_dir={tmp_path / 'run'}", f"data.root={root}",
                 f"squeeze.checkpoint={tmp_path / 'r18.pth'}"]) == 2
    assert "does not fit model" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("cutmix, logits", [(True, "fp16"), (False, "top3")])
def test_storage_estimate_matches_a_written_store(tmp_path, cutmix, logits):
    from labeldistill.config import RelabelConfig

    n, c, hw = 37, 12, (20, 20)
    relabel_cfg = RelabelConfig(epochs=5, batch_size=8, cutmix=1.0 if cutmix else 0.0, crop_scale=[0.08, 1.0],
                                flip=True)
    plan = StepPlan(n, relabel_cfg.batch_size, relabel_cfg.epochs, seed=0)
    names = [f"class_{i:04d}" for i in range(c)]
    images = ImageSet(torch.zeros(n, 3, *hw, dtype=torch.uint8), torch.arange(n) % c, names, (0.5,) * 3, (0.25,) * 3)
    info = {"fingerprint": "f" * 16, "mean": [0.4802, 0.4481, 0.3975], "std": [0.2302, 0.2265, 0.2262]}
    meta = {**store_meta(images, info, "e" * 16, relabel_cfg, 0, plan), "logits_format": logits}
    writer = LabelStoreWriter(tmp_path / "full", meta, steps_per_shard=7)
    g = torch.Generator().manual_seed(0)
    for sid in range(plan.total_steps):
        rec = sample_step(plan, sid, relabel_cfg, hw, hw)
        rec.logits = torch.randn(len(rec.sample_idx), c, generator=g).half()
        writer.add(rec)
    store = writer.close()
    est = estimate_store_bytes(list(range(plan.total_steps)), plan, c, hw, cutmix, logits, 7, names)
    assert est["components"] == {k: store.manifest["component_bytes"].get(k, 0) for k in est["components"]}
    assert est["entries"] == store.manifest["num_entries"] == n * relabel_cfg.epochs
    assert abs(est["total"] - store.bytes_on_disk()) < 200  # metadata: headers + manifest, estimated
    if logits == "fp16":
        # streamed in shards of the source's 7 steps (not one shard holding every kept step)
        pruned = prune_store(store.path, tmp_path / "x4", 4, seed=0)
        kept = LabelStore(pruned.path).step_ids
        assert [sh["num_steps"] for sh in pruned.manifest["shards"]] == [7] * (len(kept) // 7) + (
            [len(kept) % 7] if len(kept) % 7 else [])
        est4 = estimate_store_bytes(kept, plan, c, hw, cutmix, logits, 7, names, pruned=True)
        assert est4["shards"] == len(pruned.manifest["shards"])
        assert est4["floor"] == sum(pruned.manifest["component_bytes"].values())
        assert abs(est4["total"] - pruned.bytes_on_disk()) < 200
        one = prune_store(store.path, tmp_path / "x4one", 4, seed=0, steps_per_shard=len(kept))
        assert len(one.manifest["shards"]) == 1 and one.step_ids == kept
        est1 = estimate_store_bytes(kept, plan, c, hw, cutmix, class_names=names)
        assert abs(est1["total"] - one.bytes_on_disk()) < 200


def test_png_upper_bound_holds_for_noise(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(28, 28), (64, 64, 3), (224, 224, 3)]:
        p = tmp_path / "x.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(p, optimize=True)
        c = 1 if len(shape) == 2 else 3
        bound = png_upper_bound(c, shape[0], shape[1])
        assert os.path.getsize(p) <= bound < 1.01 * c * shape[0] * shape[1] + 200


@pytest.mark.parametrize("env, expected", [({}, True), ({"LABELDISTILL_MALLOC": "system"}, False),
                                           ({"MALLOC_ARENA_MAX": "2"}, False)])
def test_tune_malloc_applies_unless_opted_out(env, expected):
    """tune_malloc sets glibc's thresholds on Linux, and leaves them alone when the user opts out or already
    tunes malloc (run in a fresh process: the setting cannot be undone)."""
    import os
    import platform
    import subprocess
    import sys

    if expected and (sys.platform != "linux" or platform.libc_ver()[0] != "glibc"):
        pytest.skip("glibc only")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in (
        "LABELDISTILL_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD")}
    r = subprocess.run([sys.executable, "-c", "from labeldistill.runtime import tune_malloc; print(tune_malloc())"],
                       capture_output=True, text=True, env={**base, **env}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(expected)
