"""Evaluation protocols as presets (issue 22 item 1): what each preset sets, refusals, rows that record their
protocol, a leaderboard that never ranks two protocols together, and no change without a preset."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import needs_fmnist
from labeldistill import cli
from labeldistill.config import ModelConfig, load_config
from labeldistill.errors import ConfigError, LabelDistillError
from labeldistill.hard_augment import HARD_AUGMENTATIONS, hard_augmentation
from labeldistill.leaderboard import leaderboard
from labeldistill.main_stages import main_units
from labeldistill.models import build_model
from labeldistill.protocols import PROTOCOLS, HardRecipe, apply_protocol, hard_recipe
from labeldistill.training import schedule_lr

REPO = Path(__file__).resolve().parents[1]


def _cfg(protocol: str, dataset: str = "fashion-mnist", *more: str):
    return load_config(None, [f"data.dataset={dataset}", f"validate.protocol={protocol}", *more])


def _vc(cfg) -> dict:
    keys = ("optimizer", "lr", "momentum", "weight_decay", "weight_decay_1d", "schedule", "warmup_epochs", "epochs",
            "temperature", "t2_scale")
    return {"model": dataclasses.asdict(cfg.validate.model), **{k: getattr(cfg.validate, k) for k in keys}}


CONVNET128 = {"name": "convnet", "args": {"width": 128, "depth": 3, "norm": "instance", "dc_padding": True}}


def test_dc_and_dsa_set_dc_convnet_sgd_step_schedule_and_their_hard_label_recipe():
    dc = _cfg("dc")
    assert _vc(dc) == {"model": CONVNET128, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                       "weight_decay_1d": True, "schedule": "step", "warmup_epochs": 0, "epochs": 301,
                       "temperature": 4.0, "t2_scale": True}  # soft-label keys: the project's (DC has none)
    assert hard_recipe(dc) == HardRecipe(256, "none", 301)  # get_daparam: no augmentation but on MNIST
    assert hard_recipe(_cfg("dc", "mnist-5k")) == HardRecipe(256, "dc_crop_scale_rotate", 1001)
    dsa = _cfg("dsa")
    assert _vc(dsa) == {**_vc(dc), "epochs": 1001}
    assert hard_recipe(dsa) == HardRecipe(256, "dsa", 1001)
    for digits in ("mnist-5k", "digits28", "digits"):  # DSA readme: no flip for digit datasets
        assert hard_recipe(_cfg("dsa", digits)) == HardRecipe(256, "dsa_no_flip", 1001)


def test_sre2l_lpld_and_ddranking_set_their_reference_recipes():
    tiny = _vc(_cfg("lpld", "tiny-imagenet"))
    assert tiny == {"model": {"name": "torchvision:resnet18", "args": {"stem": "small"}}, "optimizer": "sgd",
                    "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4, "weight_decay_1d": False,
                    "schedule": "cosine_epoch", "warmup_epochs": 5, "epochs": 100, "temperature": 20.0,
                    "t2_scale": True}
    assert hard_recipe(_cfg("lpld", "tiny-imagenet")) == HardRecipe(64, "crop_flip", 100, (0.08, 1.0))
    in1k = _vc(_cfg("lpld", "imagenet"))
    assert in1k == {**tiny, "model": {"name": "torchvision:resnet18", "args": {"stem": "imagenet"}},
                    "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "warmup_epochs": 0, "epochs": 300,
                    "t2_scale": False}
    assert _vc(_cfg("sre2l", "imagenet")) == in1k
    assert hard_recipe(_cfg("sre2l")) == HardRecipe(1024, "crop_flip", 300, (0.08, 1.0))
    dd = _vc(_cfg("ddranking"))
    assert dd == {**_vc(_cfg("dc")), "epochs": 300, "temperature": 1.2, "t2_scale": False}
    assert hard_recipe(_cfg("ddranking")) == HardRecipe(256, "none", 300)


def test_every_preset_cites_a_commit_or_version():
    for p in PROTOCOLS.values():
        assert re.search(r"\b[0-9a-f]{40}\b|\b0\.2\.0\b", p.source), p.name
        assert set(p.settings("fashion-mnist")) >= {"model", "optimizer", "lr", "weight_decay", "schedule", "epochs"}
        assert hard_recipe(_cfg(p.name)).augment in HARD_AUGMENTATIONS


def test_contradictory_settings_are_refused_in_one_line():
    assert _cfg("dc", "fashion-mnist", "validate.lr=0.01").validate.lr == 0.01  # the preset's own value: fine
    for bad, key in [("validate.lr=0.05", "validate.lr"), ("validate.weight_decay=0.1", "validate.weight_decay"),
                     ("validate.model.name=lenet", "validate.model"), ("validate.students=[lenet]", "students")]:
        with pytest.raises(ConfigError, match=re.escape(key)) as e:
            _cfg("dc", "fashion-mnist", bad)
        assert "\n" not in str(e.value) and "drop" in str(e.value)
    with pytest.raises(ConfigError, match="unknown validate.protocol 'dd'"):
        _cfg("dd")


def test_cli_refuses_a_contradiction_with_exit_2(capsys):
    code = cli.main(["run", str(REPO / "configs" / "fmnist_demo.yaml"), "validate.protocol=dc", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "validate.protocol: dc sets validate.model" in err[0]
    code = cli.main(["run", str(REPO / "configs" / "fmnist_demo.yaml"), "validate.protocol=dc", "validate.lr=0.05",
                     "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()  # every contradicting key at once, so one edit fixes it
    assert code == 2 and len(err) == 1 and "validate.model =" in err[0] and "validate.lr = 0.01 (got 0.05)" in err[0]
    assert "drop these keys" in err[0]


def test_no_protocol_leaves_every_stage_setting_as_before():
    demo = REPO / "configs" / "fmnist_demo.yaml"
    plain = load_config(demo, ["hard_label.enabled=true"])
    null = load_config(demo, ["hard_label.enabled=true", "validate.protocol=null"])
    for (stage, ref), (_, ref2) in zip(main_units(plain), main_units(null)):
        settings = stage.settings(plain, ref)
        assert not [k for k in settings if "protocol" in k], ref.key
        assert settings == stage.settings(null, ref2)
    apply_protocol(plain)  # no preset: nothing changes
    assert plain == null


def test_step_schedule_drops_the_lr_where_dc_does():
    lr = schedule_lr("step", 0.01, [2] * 301)  # DC Epoch = 300: passes 0..151 at lr, then 0.1 lr
    assert lr(151 * 2 + 1) == 0.01 and lr(152 * 2) == pytest.approx(0.001) and lr(300 * 2 + 1) == pytest.approx(0.001)
    # evaluate_synset: lr x 0.1 after pass ep == Epoch // 2 + 1 of range(Epoch + 1), so the first slow pass is
    # Epoch // 2 + 2: 502 for DSA's / MNIST's Epoch = 1000, 151 for Epoch = 299 (odd)
    for epoch_arg in (1000, 299):
        first_slow = epoch_arg // 2 + 2
        lr = schedule_lr("step", 0.01, [1] * (epoch_arg + 1))
        assert lr(first_slow - 1) == 0.01 and lr(first_slow) == pytest.approx(0.001)


def test_dc_instance_norm_is_groupnorm_with_one_group_per_channel_and_affine():
    """DC's ``instancenorm`` is ``nn.GroupNorm(C, C, affine=True)``, not ``nn.InstanceNorm2d`` (no affine)."""
    net = build_model(ModelConfig(**CONVNET128), 10, (3, 32, 32))
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.InstanceNorm2d))]
    assert len(norms) == 3 and all(type(m) is torch.nn.GroupNorm for m in norms)
    assert all(m.num_groups == m.num_channels == 128 and m.affine and m.weight.shape == (128,) for m in norms)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(1, 1)] * 3 and net.feature_dim == 128 * 4 * 4  # RGB 32 px: no extra pad
    pools = [m for m in net.modules() if isinstance(m, torch.nn.AvgPool2d)]
    assert len(pools) == 3 and sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == 3


def _replay(seed: int, draws):
    torch.manual_seed(seed)
    return [d() for d in draws]


def test_dsa_scale_and_rotate_resample_dsa_s_own_sampling_grid():
    """DSA's rand_scale / rand_rotate: grid x and y × U(1/1.2, 1.2) (drawn x first), rotation U(±15°), through
    affine_grid + grid_sample, per image."""
    from labeldistill.hard_augment import _dsa_rotate, _dsa_scale

    x = torch.randn(5, 1, 28, 28)
    sx, sy = _replay(3, [lambda: torch.rand(5) * (1.2 - 1 / 1.2) + 1 / 1.2] * 2)
    theta = torch.zeros(5, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    want = torch.nn.functional.grid_sample(x, torch.nn.functional.affine_grid(theta, [5, 1, 28, 28],
                                                                              align_corners=False),
                                           align_corners=False)
    torch.manual_seed(3)
    assert torch.allclose(_dsa_scale(x), want, atol=1e-6)
    (a,) = _replay(4, [lambda: (torch.rand(5) - 0.5) * 2 * 15 / 180 * math.pi])
    rot = torch.stack([torch.stack([a.cos(), -a.sin(), 0 * a], 1), torch.stack([a.sin(), a.cos(), 0 * a], 1)], 1)
    want = torch.nn.functional.grid_sample(x, torch.nn.functional.affine_grid(rot, [5, 1, 28, 28],
                                                                              align_corners=False),
                                           align_corners=False)
    torch.manual_seed(4)
    assert torch.allclose(_dsa_rotate(x), want, atol=1e-5)


def test_dsa_no_flip_never_mirrors_and_dsa_does():
    x = torch.arange(28.0).expand(1, 1, 28, 28).clone()  # a left-to-right ramp: only a flip mirrors it
    mirrored = {name: 0 for name in ("dsa", "dsa_no_flip")}
    for name in mirrored:
        aug = hard_augmentation(name, (28, 28))
        torch.manual_seed(0)
        mirrored[name] = sum(torch.equal(aug(x), x.flip(3)) for _ in range(200))
    assert mirrored["dsa"] > 0 and mirrored["dsa_no_flip"] == 0


def test_dc_augment_fills_with_the_batch_means_and_scales_by_whole_pixels():
    """DC's augment: crop pads with the batch's channel means, rotate fills with their mean (both over the whole
    batch, not the images that drew that op), scale centres an int(U(0.8, 1.2) * 28) px resize on zeros."""
    from labeldistill.hard_augment import _dc_augment, _dc_scale_one

    x = torch.arange(8.0).mul(4).view(8, 1, 1, 1).expand(8, 1, 28, 28).clone()  # constant images 0, 4, ..., 28
    batch_mean = 14.0
    seen, filled = set(), 0
    for seed in range(6):
        (choice,) = _replay(seed, [lambda: torch.randint(3, (8,))])
        torch.manual_seed(seed)
        y = _dc_augment(x)
        for i, k in enumerate(choice.tolist()):
            c, vals = 4.0 * i, set(y[i].unique().tolist())
            if k == 0:  # crop: own value and the batch mean
                assert vals <= {c, batch_mean}
            elif k == 2:  # rotate: a corner blends own value and fill (all fill past a few degrees)
                corner = y[i, 0, 0, 0].item()
                assert min(c, batch_mean) - 1e-4 <= corner <= max(c, batch_mean) + 1e-4
                filled += c != batch_mean and corner == pytest.approx(batch_mean)
            else:  # scale: own value and zeros
                assert vals <= {c, 0.0}
            seen.add(k)
    assert seen == {0, 1, 2} and filled > 0
    torch.manual_seed(1)
    for _ in range(20):
        y = _dc_scale_one(torch.ones(1, 28, 28))
        rows, cols = (y[0] != 0).any(1), (y[0] != 0).any(0)
        nh, nw = int(rows.sum()), int(cols.sum())
        assert 22 <= nh <= 28 and 22 <= nw <= 28  # int(0.8 * 28) = 22; larger sizes are cut back to 28
        assert int(rows.float().argmax()) == (28 - nh) // 2 and int(cols.float().argmax()) == (28 - nw) // 2


def test_dc_convnet_pads_28_px_to_32_and_hard_augmentations_keep_shapes():
    net = build_model(ModelConfig(**CONVNET128), 10, (1, 28, 28))
    assert net.feature_dim == 128 * 4 * 4  # DC: 28 px → 32 px → 16 → 8 → 4
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    for name in HARD_AUGMENTATIONS:
        y = hard_augmentation(name, (28, 28))(x.clone())
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert torch.equal(y, x) == (name == "none")
    with pytest.raises(ConfigError, match="unknown hard-label augmentation"):
        hard_augmentation("autoaugment", (28, 28))


def _with_protocol(cfg, name: str):
    vc = dataclasses.replace(cfg.validate, protocol=name, model=ModelConfig("convnet", {"width": 32}), epochs=None,
                             optimizer="adamw", lr=0.002, weight_decay=0.01, schedule="cosine_epoch", momentum=0.9,
                             weight_decay_1d=False, warmup_epochs=0)
    out = dataclasses.replace(cfg, validate=vc)
    apply_protocol(out)
    return out


@needs_fmnist
def test_rows_record_their_protocol(tiny_run, tmp_path, one_thread, monkeypatch):
    import shutil

    import labeldistill.validate as V

    cfg, _ = tiny_run
    dest = tmp_path / "run"
    shutil.copytree(cfg.run_path, dest, ignore=shutil.ignore_patterns("hard_label"))
    plain = dataclasses.replace(cfg, run_dir=str(dest))
    dc = _with_protocol(plain, "dc")
    monkeypatch.setattr(V, "hard_recipe", lambda c: HardRecipe(8, "dsa", 2) if c.validate.protocol else None)
    mode = cfg.recover.modes[0]
    row = V.hard_label(dc, mode)
    assert row["protocol"] == "dc" and row["epochs"] == 2 and row["steps"] == 2 * 3  # 20 images, batches of 8
    assert row["student_args"] == CONVNET128["args"]
    assert V.hard_label(plain, mode)["protocol"] is None
    fake = {"top1": 0.5, "top5": 0.9, "history": [], "epochs": 1, "steps": 1, "seconds": 0.0}
    monkeypatch.setattr(V, "train_student", lambda *a, **k: dict(fake))
    soft = V.validate(dc, mode, 1.0)
    assert soft["protocol"] == "dc" and soft["recipe"]["schedule"] == "step"
    written = [json.loads(f.read_text()) for f in (dest / "validate").rglob("*.json")]
    assert [r["protocol"] for r in written if r.get("fingerprint") == soft["fingerprint"]] == ["dc"]


def _run_dir(root: Path, name: str, protocol: str | None) -> Path:
    d = root / name
    d.mkdir()
    row = {"recover": "random_real", "source": "random_real", "ipc": 1, "prune_factor": 1.0, "logits": "fp16",
           "label_bytes": 10, "image_bytes": 10, "student": "convnet", "seed": 0, "top1": 0.5,
           **({"protocol": protocol} if protocol else {})}
    (d / "results.json").write_text(json.dumps({"rows": [row]}))
    return d


def test_leaderboard_refuses_to_mix_protocols(tmp_path, capsys):
    own, dc, dc2 = _run_dir(tmp_path, "own", None), _run_dir(tmp_path, "dc", "dc"), _run_dir(tmp_path, "dc2", "dc")
    assert len(leaderboard([dc, dc2])) == 1  # one protocol: ranked (the same setting, pooled)
    with pytest.raises(LabelDistillError, match=r"2 evaluation protocols \(dc: .*; project: .*own"):
        leaderboard([own, dc])
    assert cli.main(["leaderboard", str(own), str(dc)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluation protocols" in err[0]


def test_hard_label_fingerprint_holds_the_preset_values(monkeypatch):
    """A preset whose hard-label batch changes makes old hard-label rows stale: the values are fingerprinted."""
    from labeldistill import protocols
    from labeldistill.layout import REAL_TRAIN
    from labeldistill.main_stages import _hard_label_settings
    from labeldistill.provenance import StageRef

    cfg = load_config(None, ["validate.protocol=dc", "hard_label.enabled=true"])
    ref = StageRef("hard-label", REAL_TRAIN)
    before = _hard_label_settings(cfg, ref)
    dc = protocols.PROTOCOLS["dc"]
    changed = dataclasses.replace(dc, hard=lambda ds: dataclasses.replace(dc.hard(ds), batch_size=7))
    monkeypatch.setitem(protocols.PROTOCOLS, "dc", changed)
    after = _hard_label_settings(cfg, ref)
    assert before["validate.protocol.hard"]["batch_size"] != 7 and after["validate.protocol.hard"]["batch_size"] == 7


def test_sre2l_and_lpld_hard_rows_crop_as_the_reference_students(monkeypatch):
    """The SRe2L and LPLD students crop with RandomResizedCrop scale (0.08, 1): a hard-label row under their presets
    does too, whatever ``relabel.crop_scale`` is, and the scale is in its fingerprint; without a preset (or under
    ``dc``) the row keeps ``relabel.crop_scale`` and its fingerprint has no crop key."""
    from types import SimpleNamespace

    import labeldistill.validate as V
    from labeldistill.layout import REAL_TRAIN
    from labeldistill.main_stages import _hard_label_settings
    from labeldistill.provenance import StageRef

    class Seen(Exception):
        pass

    def spy(name, size, crop_scale, flip):
        raise Seen(name, tuple(crop_scale))

    monkeypatch.setattr(V, "hard_augmentation", spy)
    test = SimpleNamespace(num_classes=10, shape=(1, 28, 28))
    for protocol, want in [("sre2l", (0.08, 1.0)), ("lpld", (0.08, 1.0)), (None, (0.5, 1.0))]:
        cfg = load_config(None, ["data.dataset=fashion-mnist", "relabel.crop_scale=[0.5, 1.0]", "device=cpu",
                                 "hard_label.enabled=true", *([f"validate.protocol={protocol}"] if protocol else [])])
        with pytest.raises(Seen) as seen:
            V.train_hard_student(cfg, None, test, 1)
        assert seen.value.args == ("crop_flip", want), protocol
        hard = _hard_label_settings(cfg, StageRef("hard-label", REAL_TRAIN)).get("validate.protocol.hard")
        assert (hard or {}).get("crop_scale") == (want if protocol else None)
    dc = load_config(None, ["validate.protocol=dc", "hard_label.enabled=true"])
    assert set(_hard_label_settings(dc, StageRef("hard-label", REAL_TRAIN))["validate.protocol.hard"]) == \
        {"batch_size", "augment", "epochs"}  # a preset that sets no crop keeps its fingerprint


def test_hard_label_fingerprint_holds_the_augmentation_revision():
    """Rows made with the earlier DC / DSA augmentation code go stale; a preset without augmentation keeps its key."""
    from labeldistill.layout import REAL_TRAIN
    from labeldistill.main_stages import _hard_label_settings
    from labeldistill.protocols import AUGMENT_REVISIONS
    from labeldistill.provenance import StageRef

    ref = StageRef("hard-label", REAL_TRAIN)
    revision = "validate.protocol.hard_augment_revision"
    for protocol, dataset, want in [("dsa", "fashion-mnist", 2), ("dsa", "mnist-5k", 2), ("dc", "mnist-5k", 2),
                                    ("dc", "fashion-mnist", None), ("ddranking", "fashion-mnist", None)]:
        cfg = load_config(None, [f"data.dataset={dataset}", f"validate.protocol={protocol}", "hard_label.enabled=true"])
        assert _hard_label_settings(cfg, ref).get(revision) == want, (protocol, dataset)
    assert set(AUGMENT_REVISIONS) <= set(HARD_AUGMENTATIONS)


def test_kd_loss_is_pinned_by_the_soft_label_protocols_only():
    """sre2l / lpld / ddranking evaluate with KL: another loss is refused; dc leaves the loss to the method."""
    for name in ("sre2l", "lpld", "ddranking"):
        assert load_config(None, [f"validate.protocol={name}"]).validate.loss == "kl"
        with pytest.raises(ConfigError, match="validate.loss"):
            load_config(None, [f"validate.protocol={name}", "validate.loss=gift"])
    assert load_config(None, ["validate.protocol=dc", "validate.loss=gift"]).validate.loss == "gift"
