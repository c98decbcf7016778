"""Augmentation defaults that follow the dataset (flip, relabel crop scale), the dry-run warning about relabel
augmentations a teacher checkpoint never saw, and the refusal of a teacher checkpoint near chance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from labeldistill.cli import main
from labeldistill.config import load_config
from labeldistill.data import augmentation_summary, check_dataset_options, resolve_augmentation
from labeldistill.errors import DataError
from labeldistill.io import atomic_write_json
from labeldistill.layout import LabelVariant
from labeldistill.models import create_model
from labeldistill.provenance import StageRef, as_version1, fingerprint
from labeldistill.main_stages import hard_label_settings, stage_settings

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "fmnist_demo.yaml"
OLD_DEFAULTS = ["squeeze.flip=true", "recover.flip=true", "relabel.flip=true", "relabel.crop_scale=[0.08, 1.0]"]
REFS = [StageRef("squeeze"), StageRef("class-stats"), StageRef("recover", "lpld"), StageRef("relabel", "lpld"),
        StageRef("validate", "lpld", LabelVariant(40.0), "convnet-width32")]
# Fingerprints of the default config (fashion-mnist), computed by the code before the defaults followed the data
# (commits 2e369a9 and b2af11a, when squeeze/recover/relabel.flip were true and relabel.crop_scale [0.08, 1.0] in the schema).
OLD_FINGERPRINTS = {"squeeze": "0623b643c1b51775", "class-stats": "6044efc591c757d5",
                    "recover[lpld]": "174a906d3fc15c92", "relabel[lpld]": "9bcbfb59532c967b",
                    "validate[lpld x40 convnet-width32]": "ee33366aed1b7530", "hard_label[lpld]": "93b437c003682315"}
DIGITS = ["data.dataset=digits", "device=cpu", "squeeze.model.args={width: 8, depth: 2, norm: batch}",
          "recover.modes=[random_real]", "validate.model.args={width: 8, depth: 2}"]


def _resolved(*overrides: str):
    return resolve_augmentation(load_config(None, list(overrides)))


def _aug(cfg) -> tuple:
    return cfg.squeeze.flip, cfg.recover.flip, cfg.relabel.flip, cfg.relabel.crop_scale


@pytest.mark.parametrize("dataset", ["mnist-5k", "digits", "digits28"])
def test_digit_datasets_resolve_to_no_flip_and_quarter_crops(dataset):
    assert _aug(_resolved(f"data.dataset={dataset}")) == (False, False, False, [0.25, 1.0])


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10", "tiny-imagenet", "imagenet", "imagefolder"])
def test_mirror_symmetric_datasets_resolve_to_the_old_defaults(dataset):
    assert _aug(_resolved(f"data.dataset={dataset}")) == (True, True, True, [0.08, 1.0])


def test_fashion_mnist_fingerprints_are_those_of_the_old_fixed_defaults():
    """Run directories made before the defaults followed the data stay fresh: same settings, same fingerprints
    (as fingerprint version 1 wrote them: old ledger entries are re-keyed through :func:`as_version1`)."""
    # the student recipe's defaults changed on purpose (issue 20 item 7: no decay on 1-D parameters, a cosine per
    # epoch); with the recipe they replaced, every fingerprint is the old one
    unset = _resolved("data.dataset=fashion-mnist", "validate.weight_decay_1d=true", "validate.schedule=cosine_step")
    got = {r.key: fingerprint(as_version1(stage_settings(unset, r), None)) for r in REFS}
    got["hard_label[lpld]"] = fingerprint(as_version1(hard_label_settings(unset, "lpld"), None))
    assert got == OLD_FINGERPRINTS
    explicit = load_config(None, ["data.dataset=fashion-mnist", "validate.weight_decay_1d=true",
                                  "validate.schedule=cosine_step", *OLD_DEFAULTS])
    assert all(stage_settings(explicit, r) == stage_settings(unset, r) for r in REFS)
    # an unresolved config fingerprints as its resolved self (stage_settings resolves first)
    fresh = load_config(None, ["validate.weight_decay_1d=true", "validate.schedule=cosine_step"])
    assert fingerprint(as_version1(stage_settings(fresh, REFS[-1]), None)) == \
        OLD_FINGERPRINTS["validate[lpld x40 convnet-width32]"]
    # the digits' resolved values do change the fingerprints (their runs were made with flips)
    digits = _resolved("data.dataset=mnist-5k")
    old_digits = load_config(None, ["data.dataset=mnist-5k", *OLD_DEFAULTS])
    assert fingerprint(stage_settings(digits, REFS[0])) != fingerprint(stage_settings(old_digits, REFS[0]))


def test_an_explicit_value_wins_over_the_dataset():
    cfg = _resolved("data.dataset=mnist-5k", "relabel.flip=true", "relabel.crop_scale=[0.5, 1.0]", "squeeze.flip=true")
    assert _aug(cfg) == (True, False, True, [0.5, 1.0])
    cfg = _resolved("data.dataset=fashion-mnist", "recover.flip=false", "relabel.crop_scale=[0.2, 0.9]")
    assert _aug(cfg) == (True, False, True, [0.2, 0.9])


def test_mirror_symmetric_option_overrides_the_dataset_and_is_accepted_by_every_dataset():
    assert _aug(_resolved("data.dataset=imagefolder", "data.mirror_symmetric=false")) == \
        (False, False, False, [0.08, 1.0])
    assert _aug(_resolved("data.dataset=mnist-5k", "data.mirror_symmetric=true"))[:3] == (True, True, True)
    for name in ("imagefolder", "fashion-mnist", "mnist-5k"):
        check_dataset_options(name, {"mirror_symmetric": True})  # no ConfigError
    line = augmentation_summary(load_config(None, ["data.dataset=imagefolder", "data.mirror_symmetric=false"]))
    assert "squeeze.flip false" in line and "data.mirror_symmetric is not mirror-symmetric" in line


def test_dry_run_shows_the_resolved_values(capsys):
    assert main(["run", str(DEMO), "--dry-run", "--no-probe", *DIGITS, "run_dir=/nonexistent/x"]) == 0
    out = capsys.readouterr().out
    assert ("augmentation: squeeze.flip false, recover.flip false, relabel.flip false, relabel.crop_scale "
            "[0.25, 1.0] (unset keys follow the data: dataset 'digits' is not mirror-symmetric") in out
    assert "warning: relabel" not in out


def _digits_teacher(folder: Path, record: dict | None) -> Path:
    """A random ConvNet for 8 × 8 digits saved as ``folder/model.safetensors`` (+ ``teacher.json`` = ``record``)."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model("convnet", num_classes=10, in_channels=1, image_size=8, width=8, depth=2, norm="batch")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    if record is not None:
        atomic_write_json(folder / "teacher.json", record)
    return folder / "model.safetensors"


def test_dry_run_warns_about_relabel_augmentations_the_checkpoint_never_saw(tmp_path, capsys):
    aug = {"flip": False, "crop_scale": [0.5, 1.0], "crop_padding": 0}
    ckpt = _digits_teacher(tmp_path / "t", {"augmentation": aug})
    base = ["run", str(DEMO), "--dry-run", "--no-probe", *DIGITS, f"squeeze.checkpoint={ckpt}", f"run_dir={tmp_path / 'r'}"]
    assert main(base + ["relabel.flip=true", "relabel.crop_scale=[0.08, 1.0]"]) == 0
    out = capsys.readouterr().out
    assert f"warning: relabel.flip: the teacher checkpoint {ckpt} was trained without horizontal flips" in out
    assert "warning: relabel.crop_scale: crops down to 8 % of the area" in out and "at least 50 %" in out
    assert main(base + ["relabel.crop_scale=[0.5, 1.0]"]) == 0  # the digits' default: no flip
    assert "warning: relabel" not in capsys.readouterr().out
    other = _digits_teacher(tmp_path / "u", None)  # no record: nothing to say
    assert main(base[:-2] + [f"squeeze.checkpoint={other}", f"run_dir={tmp_path / 'r'}"]) == 0
    assert "warning: relabel" not in capsys.readouterr().out


def _classifier_bias_teacher(folder: Path) -> Path:
    """A teacher that answers class 0 for every image: 10 % top-1 on the balanced digits test split."""
    ckpt = _digits_teacher(folder, None)
    from safetensors.torch import load_file

    sd = load_file(str(ckpt))
    sd["classifier.weight"].zero_()
    sd["classifier.bias"].copy_(torch.arange(10, 0, -1).float())
    save_file(sd, str(ckpt))
    return ckpt


def test_a_teacher_checkpoint_at_chance_is_refused_and_nothing_is_written(tmp_path, capsys, one_thread):
    from labeldistill.squeeze import squeeze

    ckpt = _classifier_bias_teacher(tmp_path / "t")
    run = tmp_path / "r"
    args = [*DIGITS, f"squeeze.checkpoint={ckpt}", f"run_dir={run}"]
    with pytest.raises(DataError, match=r"scores 10\.0 % on the test split \(chance 10\.0 %.*class order may differ"):
        squeeze(load_config(DEMO, args))
    assert main(["squeeze", str(DEMO), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "squeeze.force_teacher=true" in err
    assert not (run / "teacher" / "teacher.json").exists() and not (run / "stages.json").exists()
    info = squeeze(load_config(DEMO, [*args, "squeeze.force_teacher=true"]))
    assert info["top1"] == pytest.approx(0.1) and (run / "teacher" / "teacher.json").is_file()
    assert info["augmentation"] is None  # no record next to the checkpoint


def test_a_good_teacher_with_permuted_classes_is_refused(tmp_path, one_thread):
    """The case the check is for: a well-trained teacher whose class order is not the dataset's."""
    from safetensors.torch import load_file

    from labeldistill.squeeze import squeeze

    own = load_config(DEMO, [*DIGITS, "squeeze.epochs=8", f"run_dir={tmp_path / 'own'}"])
    info = squeeze(own)
    assert info["top1"] > 0.5 and info["augmentation"] == {"flip": False, "crop_scale": None, "crop_padding": 2}
    ckpt = tmp_path / "own" / "teacher" / "model.safetensors"
    sd = load_file(str(ckpt))
    perm = torch.roll(torch.arange(10), 1)  # class c answered as c + 1
    sd["classifier.weight"], sd["classifier.bias"] = sd["classifier.weight"][perm], sd["classifier.bias"][perm]
    shifted = tmp_path / "shifted" / "model.safetensors"
    shifted.parent.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(shifted))
    use = [*DIGITS, f"squeeze.checkpoint={shifted}", f"run_dir={tmp_path / 'use'}"]
    with pytest.raises(DataError, match="its class order may differ from the dataset's"):
        squeeze(load_config(DEMO, use))
    copied = squeeze(load_config(DEMO, [*DIGITS, f"squeeze.checkpoint={ckpt}", f"run_dir={tmp_path / 'copy'}"]))
    assert copied["top1"] == pytest.approx(info["top1"])  # the unpermuted checkpoint passes
    assert copied["augmentation"] == info["augmentation"]  # carried over from the teacher.json next to it
