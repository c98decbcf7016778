"""Evaluation protocols as presets (``validate.protocol``): the student and its training recipe the way a
published table evaluates, so that a row can be lined up with that table.

A preset sets the ``validate`` section's student (``validate.model``), optimiser, learning rate, momentum, weight
decay (and whether 1-D parameters decay), schedule, warm-up, epochs and, for soft-label rows, the KD temperature
and its ``T²`` factor (``sre2l`` / ``lpld`` / ``ddranking`` also the KD loss, ``kl``; ``dc`` / ``dsa`` leave
``validate.loss`` free: DC evaluates hard labels only, so a soft-label loss is part of the method under test); for hard-label rows (``labeldistill hard-label``, ``hard_label.enabled``) also the batch
size, the augmentation and the epochs (:func:`hard_recipe`). Soft-label rows keep their stored augmentation and
batches (the label store's ``relabel`` settings: that is the method under test); the preset sets everything else.

Explicit settings against a preset: a key the preset sets that is left at its default takes the preset's value;
a key set to the preset's value is accepted; a key set to any other value is refused (:class:`ConfigError`), as
is ``validate.students`` (the preset names its student). No preset (``None``, the default) changes nothing.

Differences from the reference code kept on purpose (said in each preset's ``notes``):

- every preset: the student is scored once after its last epoch (DD-Ranking keeps the best of its test-split
  evaluations and searches the learning rate on the test split; neither is done here);
- ``dc`` / ``dsa``: DC re-creates its SGD optimiser at the learning-rate drop (momentum buffers reset), which the
  project's one loop does not do; DC's MNIST rotation is kornia's bilinear one, not scipy's cubic spline
  (:mod:`labeldistill.hard_augment`);
- ``sre2l``: the reference batch of 1024 is two accumulated micro-batches of 512 (BatchNorm statistics over 512);
  a hard-label row here trains on one batch of 1024;
- ``sre2l`` / ``lpld``: neither reference trains a hard-label student; their hard-label recipe here is the
  soft-label student's with cross-entropy, the student's RandomResizedCrop scale (0.08, 1)
  (:data:`REFERENCE_CROP_SCALE`, whatever ``relabel.crop_scale`` is) + flip (``relabel.flip``) and no CutMix;
- ``ddranking``: DD-Ranking 0.2.0 has no 1-channel dataset and builds its ConvNet with 3 input channels; on 1-channel
  data this preset takes DC's 28 → 32 px first-layer padding.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

MNIST_DATASETS = ("mnist-5k", "digits28")
"""The datasets DC's ``get_daparam`` treats as ``MNIST`` (the only one it augments for the ConvNet)."""

DIGIT_DATASETS = ("digits", *MNIST_DATASETS)
"""The datasets DSA's readme calls digit datasets (MNIST, SVHN): their DiffAugment strategy has no flip."""


AUGMENT_REVISIONS = {"dc_crop_scale_rotate": 2, "dsa": 2, "dsa_no_flip": 2}
"""Hard-label augmentations whose implementation changed after rows were made with them: the revision is part of
a hard-label row's fingerprint (``validate.protocol.hard_augment_revision``), so older rows go stale. 2: DC's crop
and rotate fill with the whole batch's means, rotate by whole degrees, scale by whole-pixel nearest resizes; DSA's
scale and rotate resample its own sampling grid (``F.affine_grid``) instead of kornia's affine sampler."""


REFERENCE_CROP_SCALE = (0.08, 1.0)
"""RandomResizedCrop scale (fractions of the area) of the SRe2L and LPLD students, the crop of their presets'
hard-label rows: VILA-Lab/SRe2L ``SRe2L/validate/train_FKD.py`` at 2e346ff14386b8ea3a6a9c287c0fdf49c9e8fe21
(``RandomResizedCropWithCoords(size=224, scale=(0.08, 1))`` + flip) and ``SRe2L/validate/train_KD.py`` at
d6a720e8503775d64628b2bd6d56706e48ada3a3 (``RandomResizedCrop(224, scale=(0.08, 1.0))`` + flip, the online-KD
student); he-y/soft-label-pruning-for-dataset-distillation ``relabel_and_validate/train_FKD_label_pruning_batch.py``
at 63eee186e15e09a6889dda07805ce921c439aef4 (``load_dataset``: ``scale=(args.min_scale_crops, 1)`` + flip on
ImageNet-1K and Tiny-ImageNet, ``--min-scale-crops`` default 0.08, which ``cfg/reproduce/LPLD_*.yaml`` leave as
it is for validation)."""


@dataclass(frozen=True)
class HardRecipe:
    """What a preset sets for a hard-label row besides the ``validate`` keys.

    Attributes:
        batch_size: images per step.
        augment: ``none``, ``dc_crop_scale_rotate`` (DC's ``augment``), ``dsa`` / ``dsa_no_flip`` (DSA's
            ``DiffAugment`` with / without flip) or ``crop_flip`` (RandomResizedCrop(``crop_scale``) + flip, the
            project's hard-label default).
        epochs: passes over the images.
        crop_scale: ``crop_flip``'s RandomResizedCrop scale ``(low, high)`` (fractions of the area); ``None``:
            ``relabel.crop_scale``. Left out of the hard-label fingerprint when ``None``, so presets that do not
            set it keep their fingerprints.
    """

    batch_size: int
    augment: str
    epochs: int
    crop_scale: tuple[float, float] | None = None


@dataclass(frozen=True)
class Protocol:
    """One preset: ``validate`` keys (``settings``) and a hard-label recipe, both may depend on the dataset."""

    name: str
    source: str
    settings: Any  # (dataset) -> dict of validate keys
    hard: Any  # (dataset) -> HardRecipe
    notes: tuple = field(default_factory=tuple)


def _convnet128(dc_padding: bool = True) -> dict:
    return {"name": "convnet", "args": {"width": 128, "depth": 3, "norm": "instance", "dc_padding": dc_padding}}


def _resnet18(dataset: str) -> dict:
    return {"name": "torchvision:resnet18", "args": {"stem": "imagenet" if dataset == "imagenet" else "small"}}


def _dc_sgd(epochs: int) -> dict:
    return {"model": _convnet128(), "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
            "weight_decay_1d": True, "schedule": "step", "warmup_epochs": 0, "epochs": epochs}


def _dc_epochs(dataset: str) -> int:
    # DC trains Epoch + 1 passes: 300 without augmentation, 1000 with it (MNIST)
    return 1001 if dataset in MNIST_DATASETS else 301


DC = Protocol(
    "dc",
    "VICO-UoE/DatasetCondensation at 306245d074cca5524694a8a83ca0797a6e85dfc8: utils.py evaluate_synset (SGD "
    "lr_net 0.01, momentum 0.9, weight decay 5e-4 on every parameter, lr x 0.1 after epoch Epoch // 2 + 1, "
    "Epoch + 1 passes), get_network / get_default_convnet_setting (ConvNet width 128, depth 3, instancenorm, "
    "relu, avgpooling), networks.py ConvNet (padding 3 on a 1-channel first conv: 28 px becomes 32 px), "
    "get_daparam (crop_scale_rotate for MNIST only, none otherwise) and augment (crop 4, scale 0.2, rotate 45); "
    "main.py (lr_net 0.01, batch_train 256; epoch_eval_train 300 without augmentation, 1000 with it)",
    settings=lambda ds: _dc_sgd(_dc_epochs(ds)),
    hard=lambda ds: HardRecipe(256, "dc_crop_scale_rotate" if ds in MNIST_DATASETS else "none", _dc_epochs(ds)),
    notes=("DC re-creates its SGD optimiser at the lr drop (momentum reset); not done here",
           "MNIST rotate: kornia bilinear instead of scipy.ndimage.rotate's cubic spline"))

DSA = Protocol(
    "dsa",
    "VICO-UoE/DatasetCondensation at 306245d074cca5524694a8a83ca0797a6e85dfc8: as dc, with main.py's DSA branch "
    "(epoch_eval_train 1000, DiffAugment in evaluate_synset's epoch, seed -1: parameters drawn per image) and "
    "utils.py ParamDiffAug / DiffAugment (aug_mode S: one of color, crop, cutout, flip, scale, rotate per batch); "
    "strategy as readme.md at 53f63a672eab9ade02aabe6432706ef56f317d64 says: color_crop_cutout_flip_scale_rotate, "
    "color_crop_cutout_scale_rotate (no flip) for digit datasets",
    settings=lambda ds: _dc_sgd(1001),
    hard=lambda ds: HardRecipe(256, "dsa_no_flip" if ds in DIGIT_DATASETS else "dsa", 1001),
    notes=("DC re-creates its SGD optimiser at the lr drop (momentum reset); not done here",))


def _lpld(dataset: str) -> dict:
    if dataset == "tiny-imagenet":
        return {"model": _resnet18(dataset), "optimizer": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4,
                "weight_decay_1d": False, "schedule": "cosine_epoch", "warmup_epochs": 5, "epochs": 100,
                "temperature": 20.0, "t2_scale": True, "loss": "kl"}
    return {"model": _resnet18(dataset), "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01,
            "weight_decay_1d": False, "schedule": "cosine_epoch", "warmup_epochs": 0, "epochs": 300,
            "temperature": 20.0, "t2_scale": False, "loss": "kl"}


LPLD = Protocol(
    "lpld",
    "he-y/soft-label-pruning-for-dataset-distillation at 63eee186e15e09a6889dda07805ce921c439aef4: "
    "relabel_and_validate/train_FKD_label_pruning_batch.py (AdamW lr 1e-3, weight decay 0.01; SGD with --sgd; "
    "LambdaLR cosine stepped per epoch; Tiny: LinearLR warm-up from 0.01x over 5 epochs, 3x3 stem without "
    "max-pool, loss x T^2), utils.py get_parameters (decay on >1-D weights only), "
    "cfg/reproduce/LPLD_in1k_[4k].yaml (batch 128, 300 epochs, T 20) and LPLD_tiny_[4k].yaml (batch 64, "
    "100 epochs, T 20, SGD lr 0.2, momentum 0.9, weight decay 1e-4); the student's crop: REFERENCE_CROP_SCALE",
    settings=_lpld,
    hard=lambda ds: HardRecipe(64 if ds == "tiny-imagenet" else 128, "crop_flip", _lpld(ds)["epochs"],
                               REFERENCE_CROP_SCALE),
    notes=("no hard-label student in the reference: the hard-label recipe is the soft-label student's with "
           "cross-entropy, RandomResizedCrop(0.08, 1) + flip, no CutMix",))

SRE2L = Protocol(
    "sre2l",
    "VILA-Lab/SRe2L: SRe2L/validate/train_FKD.sh at bf4cae24a7e1025b0313b547ec10c32ea6bdf1af (ResNet-18, "
    "batch 1024 in 2 accumulation steps, --cos, T 20, CutMix) with train_FKD.py's defaults at "
    "2e346ff14386b8ea3a6a9c287c0fdf49c9e8fe21 (AdamW lr 1e-3, weight decay 0.01, 300 epochs, LambdaLR cosine "
    "stepped per epoch, no T^2) and utils.py get_parameters at 0bd3cf01bab99aad9e21c85004bf00319da54b2d (decay "
    "on >1-D weights only); the same recipe on every dataset (its Tiny-ImageNet student is trained online "
    "elsewhere), small stem below ImageNet; the student's crop: REFERENCE_CROP_SCALE",
    settings=lambda ds: {**_lpld("imagenet"), "model": _resnet18(ds)},
    hard=lambda ds: HardRecipe(1024, "crop_flip", 300, REFERENCE_CROP_SCALE),
    notes=("batch 1024 is 2 accumulated micro-batches of 512 in the reference (BatchNorm over 512); one batch here",
           "no hard-label student in the reference: the hard-label recipe is the soft-label student's with "
           "cross-entropy, RandomResizedCrop(0.08, 1) + flip, no CutMix"))

DDRANKING = Protocol(
    "ddranking",
    "ddranking 0.2.0 (PyPI wheel): metrics/soft_label.py LabelRobustScoreSoft defaults (ConvNet-3, SGD, "
    "momentum 0.9, weight decay 5e-4 on every parameter, lr_scheduler step, 300 epochs, batch 256, "
    "use_aug_for_hard false), loss/kl.py (KLDivergenceLoss temperature 1.2, scale_loss false), "
    "utils/networks.py ConvNet (width 128, instancenorm, padding 3 on a 1-channel first conv)",
    settings=lambda ds: {**_dc_sgd(300), "temperature": 1.2, "t2_scale": False, "loss": "kl"},
    hard=lambda ds: HardRecipe(256, "none", 300),
    notes=("step_size has no default in DD-Ranking (it asserts one is given): the step schedule here is DC's",
           "loss_fn_kwargs has no default either (None fails): T 1.2 is KLDivergenceLoss's own default; "
           "DD-Ranking's README example passes temperature 1.0",
           "DD-Ranking 0.2.0 has only RGB datasets and builds its ConvNet with channel=3; on 1-channel data the "
           "28 -> 32 px first-layer padding here is DC's",
           "DD-Ranking searches lr in {0.001, 0.005, 0.01, 0.05, 0.1} on the test split and keeps the best "
           "evaluation every 20 epochs; this preset fixes lr 0.01 (DC's) and scores the last epoch"))

PROTOCOLS = {p.name: p for p in (DC, DSA, SRE2L, LPLD, DDRANKING)}
"""Every preset by name."""


def protocol_settings(name: str, dataset: str) -> dict:
    """The ``validate`` keys preset ``name`` sets for ``dataset`` (``model`` as ``{name, args}``).

    Raises:
        ConfigError: an unknown preset name.
    """
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown validate.protocol '{name}'; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name].settings(dataset)


def hard_recipe(cfg: Any) -> HardRecipe | None:
    """The hard-label batch size, augmentation and epochs of ``cfg``'s protocol (``None`` without one)."""
    name = cfg.validate.protocol
    return PROTOCOLS[name].hard(cfg.data.dataset) if name else None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)
    return a == b


def apply_protocol(cfg: Any) -> None:
    """Set the ``validate`` keys of ``cfg.validate.protocol`` in place (nothing when it is ``None``).

    A key at its :class:`~labeldistill.config.ValidateConfig` default takes the preset's value; a key equal to the
    preset's value stays; any other value contradicts the preset.

    Raises:
        ConfigError: an unknown preset, ``validate.students`` set, or keys set to other values than the
            preset's (one line naming every such key with both values, and the way out).
    """
    vc = cfg.validate
    if vc.protocol is None:
        return
    preset = protocol_settings(vc.protocol, cfg.data.dataset)
    if vc.students:
        raise ConfigError(f"validate.protocol: {vc.protocol} sets the student ({preset['model']['name']}): "
                          "drop validate.students or the protocol")
    default = type(vc)()
    conflicts = [f"validate.{key} = {want} (got {have})" for key, want, have in _conflicts(vc, default, preset)]
    if conflicts:
        raise ConfigError(f"validate.protocol: {vc.protocol} sets {'; '.join(conflicts)}: drop "
                          f"{'these keys' if len(conflicts) > 1 else 'that key'} or the protocol")
    for key, want in preset.items():
        if key == "model":
            vc.model = dataclasses.replace(vc.model, name=want["name"], args=dict(want["args"]))
        else:
            setattr(vc, key, want)


def _conflicts(vc: Any, default: Any, preset: dict) -> list[tuple[str, Any, Any]]:
    """``(key, preset value, set value)`` of every ``validate`` key set to neither its default nor the preset's
    value (the model compared as ``{name, args}``)."""
    out = []
    for key, want in preset.items():
        have, was = getattr(vc, key), getattr(default, key)
        if key == "model":
            have, was = dataclasses.asdict(have), dataclasses.asdict(was)
            bad = have not in (want, was)
        else:
            bad = not _same(have, want) and not _same(have, was)
        if bad:
            out.append((key, want, have))
    return out
