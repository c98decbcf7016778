"""Evaluation protocols as presets (issue 22 item 1): what each preset sets, refusals, rows that record their
protocol, a leaderboard that never ranks two protocols together, and no change without a preset."""

from __future__ import annotations

import dataclasses
import json
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


def test_sre2l_lpld_and_ddranking_set_their_reference_recipes():
    tiny = _vc(_cfg("lpld", "tiny-imagenet"))
    assert tiny == {"model": {"name": "torchvision:resnet18", "args": {"stem": "small"}}, "optimizer": "sgd",
                    "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4, "weight_decay_1d": False,
                    "schedule": "cosine_epoch", "warmup_epochs": 5, "epochs": 100, "temperature": 20.0,
                    "t2_scale": True}
    assert hard_recipe(_cfg("lpld", "tiny-imagenet")) == HardRecipe(64, "crop_flip", 100)
    in1k = _vc(_cfg("lpld", "imagenet"))
    assert in1k == {**tiny, "model": {"name": "torchvision:resnet18", "args": {"stem": "imagenet"}},
                    "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "warmup_epochs": 0, "epochs": 300,
                    "t2_scale": False}
    assert _vc(_cfg("sre2l", "imagenet")) == in1k
    assert hard_recipe(_cfg("sre2l")) == HardRecipe(1024, "crop_flip", 300)
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
