"""``data.holdout`` / ``validate.eval_split``: a validation split held out of the train split.

A small registered dataset writes each image's index into its first two pixels, so a test can say exactly which
train images a stage saw: the held-out ones must never reach squeeze or ``random_real``, and ``eval_split:
holdout`` must score the student on exactly them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeldistill.config import load_config
from labeldistill.data import ImageSet, load_split
from labeldistill.data.loading import holdout_indices
from labeldistill.data.registry import register_dataset
from labeldistill.errors import ConfigError
from labeldistill.provenance import StageRef
from labeldistill.main_stages import stage_settings

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = {"train": 40, "test": 10}
CLASSES = 10


@register_dataset("holdout-probe")
def _probe_set(root=None, split="train") -> ImageSet:
    """``PER_CLASS[split]`` images per class; pixel (0, 0) and (0, 1) hold the image index (base 256)."""
    n = PER_CLASS[split] * CLASSES
    g = torch.Generator().manual_seed(1 if split == "train" else 2)
    labels = torch.arange(n) % CLASSES
    x = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    x[:, :, 8:20, 8:20] += (labels * 19).to(torch.uint8).view(-1, 1, 1, 1)  # learnable class pattern
    idx = torch.arange(n)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = (idx // 256).to(torch.uint8), (idx % 256).to(torch.uint8)
    return ImageSet(x, labels, [str(c) for c in range(CLASSES)], (0.2,), (0.25,))


def codes(images: torch.Tensor) -> set[int]:
    """The image indices written into uint8 images ``(N, 1, H, W)``."""
    return set((images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()).tolist())


def cfg_for(tmp_path: Path, *extra: str):
    return load_config(REPO / "configs" / "fmnist_demo.yaml", [
        f"run_dir={tmp_path}", "data.dataset=holdout-probe", "squeeze.epochs=1", "squeeze.model.args.width=8",
        "squeeze.batch_size=32", "recover.ipc=2", "recover.iterations=2", "recover.modes=[random_real]",
        "relabel.epochs=2", "relabel.batch_size=10", "prune.factors=[1]", "validate.model.args.width=8",
        "validate.epochs=1", "threads=1", *extra])


def test_holdout_indices_balanced_fixed_and_checked():
    labels = torch.arange(400) % CLASSES
    out = holdout_indices(labels, CLASSES, 50)
    assert torch.equal(out, holdout_indices(labels, CLASSES, 50))  # the same draw every time (fixed seed)
    assert torch.bincount(labels[out], minlength=CLASSES).tolist() == [5] * CLASSES
    assert len(set(out.tolist())) == 50 and torch.equal(out, out.sort().values)
    assert not torch.equal(out, torch.arange(50))  # drawn, not the first images
    for n, msg in ((400, "smaller than the train split"), (55, "multiple of the number of classes"),
                   (5, "multiple of the number of classes")):
        with pytest.raises(ConfigError, match=msg):
            holdout_indices(labels, CLASSES, n)
    uneven = torch.tensor([0] * 3 + [1] * 50)
    assert len(holdout_indices(uneven, 2, 4)) == 4
    with pytest.raises(ConfigError, match="class 0 has only 3"):
        holdout_indices(uneven, 2, 6)


def test_holdout_split_independent_of_run_seed_and_disjoint(tmp_path):
    a = cfg_for(tmp_path, "data.holdout=50", "seed=0", "data.train_subset=200")
    b = cfg_for(tmp_path, "data.holdout=50", "seed=7", "data.train_subset=200")
    held_a, held_b = load_split(a, "holdout"), load_split(b, "holdout")
    assert codes(held_a.images) == codes(held_b.images) and len(codes(held_a.images)) == 50
    for cfg in (a, b):
        train = load_split(cfg, "train")
        assert len(train) == 200 and not codes(train.images) & codes(held_a.images)
    full = cfg_for(tmp_path, "data.holdout=50")
    assert len(load_split(full, "train")) == 350
    assert codes(load_split(full, "train").images) | codes(held_a.images) == set(range(400))


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs data.holdout > 0"):
        cfg_for(tmp_path, "validate.eval_split=holdout")
    with pytest.raises(ConfigError, match="validate.eval_split"):
        cfg_for(tmp_path, "validate.eval_split=val")
    with pytest.raises(ConfigError, match="data.holdout must be >= 0"):
        cfg_for(tmp_path, "data.holdout=-10")
    with pytest.raises(ConfigError, match="holdout split needs data.holdout"):
        load_split(cfg_for(tmp_path), "holdout")
    with pytest.raises(ConfigError, match="smaller than the train split"):
        load_split(cfg_for(tmp_path, "data.holdout=400"), "train")


def test_fingerprints_unchanged_at_zero_and_holdout_in_every_stage(tmp_path):
    plain, zero = cfg_for(tmp_path), cfg_for(tmp_path, "data.holdout=0", "validate.eval_split=test")
    held = cfg_for(tmp_path, "data.holdout=50", "validate.eval_split=holdout")
    from labeldistill.layout import LabelVariant

    refs = [StageRef("squeeze"), StageRef("class-stats"), StageRef("recover", "random_real"),
            StageRef("recover", "cs"), StageRef("relabel", "cs"), StageRef("prune", "cs", LabelVariant(1.0)),
            StageRef("validate", "cs", LabelVariant(1.0), "s")]
    for ref in refs:
        s0 = stage_settings(plain, ref)
        assert s0 == stage_settings(zero, ref)
        assert not any("holdout" in k or "eval_split" in k for k in s0)
        assert stage_settings(held, ref)["data.holdout"] == 50
    assert stage_settings(held, refs[-1])["validate.eval_split"] == "holdout"


def test_squeeze_random_real_and_eval_never_mix_holdout(tmp_path, monkeypatch, one_thread):
    import labeldistill.squeeze as squeeze_mod
    import labeldistill.validate as validate_mod
    from labeldistill.pipeline import run

    seen_squeeze: set[int] = set()
    real_iter = squeeze_mod.iter_batches

    def spy_iter(data, batches, *a, **k):
        for images, labels in real_iter(data, batches, *a, **k):
            seen_squeeze.update(codes(images))
            yield images, labels

    scored: list[set[int]] = []
    real_train = validate_mod.train_student

    def spy_train(cfg, store, data, test, *a, **k):
        scored.append(codes(test.images))
        return real_train(cfg, store, data, test, *a, **k)

    monkeypatch.setattr(squeeze_mod, "iter_batches", spy_iter)
    monkeypatch.setattr(validate_mod, "train_student", spy_train)
    cfg = cfg_for(tmp_path, "data.holdout=100", "validate.eval_split=holdout")
    held = set(holdout_indices(torch.arange(400) % CLASSES, CLASSES, 100).tolist())  # index == code
    res = run(cfg)
    assert seen_squeeze and not seen_squeeze & held  # squeeze trained on some images, none held out
    assert len(seen_squeeze) > 250  # it saw (nearly) all 300 kept ones: the spy watched the real loop
    pngs = sorted((tmp_path / "images" / "random_real").rglob("*.png"))
    real = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in pngs])).view(len(pngs), 1, 28, 28)
    assert len(pngs) == 20 and not codes(real) & held
    assert scored == [held]  # scored on exactly the held-out images
    assert [r["eval_split"] for r in res["rows"]] == ["holdout"]


def _root_only_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_imagefolder_without_test_folder_is_refused_unless_test_holdout(tmp_path, capsys):
    """Never test on the training images: a folder without test/ or val/ is refused, in the run and its dry run,
    unless data.test_holdout holds a test split out of the train split."""
    from labeldistill import cli

    root = _root_only_folder(tmp_path / "own")
    base = [f"data.root={root}", "data.dataset=imagefolder", f"run_dir={tmp_path / 'run'}"]
    for argv in (["run", str(REPO / "configs" / "fmnist_demo.yaml"), "--dry-run", "--no-probe", *base],
                 ["squeeze", str(REPO / "configs" / "fmnist_demo.yaml"), *base]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "has no test/ or val/ folder" in err and "data.test_holdout" in err
    assert not (tmp_path / "run").exists()
    cfg = load_config(REPO / "configs" / "fmnist_demo.yaml", [*base, "data.test_holdout=4", "data.holdout=2"])
    test, train, held = load_split(cfg, "test"), load_split(cfg, "train"), load_split(cfg, "holdout")
    assert len(test) == 4 and len(held) == 2 and len(train) == 6
    assert torch.bincount(test.labels).tolist() == [2, 2]
    pixels = {tuple(x.flatten().tolist()) for x in torch.cat([test.images, train.images, held.images])}
    assert len(pixels) == 12  # the three splits share no image
    assert cli.main(["run", str(REPO / "configs" / "fmnist_demo.yaml"), "--dry-run", "--no-probe", *base,
                     "data.test_holdout=4"]) == 0
    out = capsys.readouterr().out
    assert "same images" not in out
