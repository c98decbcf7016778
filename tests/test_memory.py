"""Issue #14 memory findings and the ``autocast`` switch.

* relabel and validate keep the image set as uint8 and convert per step (no float32 copy of the set), with
  bitwise the same batches;
* recover measures the teacher's top-1 on its images in chunks, relabel sizes its teacher chunks by pixels;
* ``autocast: bf16 | off`` reaches every stage's forward pass and the fingerprints (only when not the default).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import labeldistill.labels.relabel as relabel_mod
import labeldistill.recover as recover_mod
import labeldistill.labels.loader as loader_mod
import labeldistill.validate as validate_mod
from labeldistill.config import RelabelConfig, load_config
from labeldistill.data import ImageSet
from labeldistill.errors import ConfigError
from labeldistill.labels.relabel import StepPlan, chunk_images_for, generate_steps, relabel, sample_step
from labeldistill.labels.replay import build_batch
from labeldistill.labels.store import LabelStore
from labeldistill.layout import RunLayout
from labeldistill.models import create_model
from labeldistill.provenance import StageRef, fingerprint
from labeldistill.main_stages import stage_settings
from labeldistill.variants import resolve_mode
from labeldistill.recover import recover
from labeldistill.runtime import autocast
from labeldistill.squeeze import squeeze
from labeldistill.validate import train_student
from labeldistill.variants import label_variants

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "fmnist_demo.yaml"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A run dir with a random ConvNet teacher (``squeeze.checkpoint``) and ``random_real`` digit images."""
    root = tmp_path_factory.mktemp("memory")
    torch.manual_seed(0)
    model = create_model("convnet", num_classes=10, in_channels=1, image_size=8, width=8, depth=2, norm="batch")
    ckpt = root / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    base = ["data.dataset=digits", "device=cpu", "squeeze.model.args={width: 8, depth: 2, norm: batch}",
            f"squeeze.checkpoint={ckpt}", "squeeze.force_teacher=true", f"run_dir={root}", "name=m", "recover.modes=[random_real]",
            "recover.ipc=4", "relabel.epochs=2", "relabel.batch_size=8", "relabel.steps_per_shard=3",
            "relabel.cutmix=1.0", "prune.factors=[1]", "validate.epochs=1", "validate.eval_batch_size=500",
            "validate.model={name: convnet, args: {width: 8, depth: 2}}"]

    def cfg(*extra: str):
        return load_config(DEMO, base + list(extra))

    squeeze(cfg())
    recover(cfg(), "random_real")
    return cfg


def _record(n: int, hw: tuple[int, int], cutmix: float = 1.0):
    plan = StepPlan(n, 6, 2, seed=3)
    relabel_cfg = RelabelConfig(cutmix=cutmix, crop_scale=[0.08, 1.0], flip=True)
    return [sample_step(plan, g, relabel_cfg, hw, hw) for g in range(plan.total_steps)]


# ---------------------------------------------------------------- uint8 image sets (finding a)


def test_build_batch_from_uint8_equals_the_float_copy_bitwise():
    """Catches: a per-step conversion that rounds differently from the whole-set ``float() / 255`` (e.g.
    multiplying by 1/255), or crops taken from the uint8 pixels."""
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (20, 3, 17, 23), generator=g, dtype=torch.uint8)
    f32 = ImageSet(u8, torch.zeros(20, dtype=torch.long), ["a"], (0.5,) * 3, (0.3,) * 3).float_images()
    for rec in _record(20, (17, 23)):
        a = build_batch(u8, rec, (17, 23), (0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
        b = build_batch(f32, rec, (17, 23), (0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_relabel_and_validate_make_no_float_copy_of_the_image_set(digits_run, monkeypatch):
    """Catches: relabel or validate calling ``ImageSet.float_images`` (a float32 copy, 4× the uint8 set)."""
    cfg = digits_run()
    ref = relabel(cfg, "random_real", force=True)  # with the float copy allowed: the reference store

    def refuse(self):
        raise AssertionError("float copy of the whole image set")

    monkeypatch.setattr(ImageSet, "float_images", refuse)
    store = relabel(cfg, "random_real", force=True)
    for g in store.step_ids:
        assert torch.equal(store.get(g).logits, ref.get(g).logits)
    seen = []
    orig = loader_mod.StoredStepDataset.__init__

    def spy(self, store, images, *args, **kwargs):
        seen.append(images.dtype)
        orig(self, store, images, *args, **kwargs)

    monkeypatch.setattr(loader_mod.StoredStepDataset, "__init__", spy)
    data, _ = recover_mod.load_synthetic(RunLayout(cfg.run_path).images_dir("random_real"),
                                         store.manifest["normalization"]["mean"], store.manifest["normalization"]["std"])
    test = ImageSet(data.images[:8], data.labels[:8], data.classes, data.mean, data.std)
    res = train_student(cfg, store, data, test)
    assert seen == [torch.uint8] and res["steps"] > 0  # the student trained from the uint8 set


# ---------------------------------------------------------------- chunked teacher passes (findings b, c)


class CountingTeacher(nn.Module):
    """Global average pool + linear layer; records the batch size of every forward."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, classes)
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.fc(x.float().mean((2, 3)))


def test_recover_measures_teacher_top1_in_chunks(tmp_path):
    """Catches: one teacher forward over every recovered image (all activations at once)."""
    torch.manual_seed(0)
    teacher = CountingTeacher(3, 5).eval()
    info = {"num_classes": 5, "mean": (0.5,) * 3, "std": (0.25,) * 3, "classes": list("abcde"), "fingerprint": "f"}
    images = torch.rand(5 * 61, 3, 4, 4)
    recover_mod._write_image_set(tmp_path / "all", "m", resolve_mode("cs"), images, teacher, info, 61, {},
                                 torch.device("cpu"), chunk=10**6)
    assert teacher.sizes == [305]
    teacher.sizes.clear()
    recover_mod._write_image_set(tmp_path / "chunked", "m", resolve_mode("cs"), images, teacher, info, 61, {},
                                 torch.device("cpu"))
    assert teacher.sizes == [256, 49]  # the default chunk
    a = (tmp_path / "all" / "images.json").read_text()
    assert a == (tmp_path / "chunked" / "images.json").read_text()


def test_relabel_chunks_hold_about_the_same_pixels_at_any_size():
    """Catches: a fixed 1,024-image chunk at any size (20 × 224² px images would be 50× the pixels of 32 px)."""
    assert chunk_images_for((28, 28)) == chunk_images_for((32, 32)) == 1024  # small images batch as before
    assert chunk_images_for((64, 64)) == 256 and chunk_images_for((224, 224)) == 20
    assert chunk_images_for((2000, 2000)) == 1
    teacher = CountingTeacher(3, 4).eval()
    images = torch.randint(0, 256, (60, 3, 96, 96), dtype=torch.uint8)
    plan = StepPlan(60, 10, 3, seed=0)
    ids = list(range(plan.total_steps))
    recs = list(generate_steps(teacher, images, plan, ids, RelabelConfig(crop_scale=[0.08, 1.0], flip=True), (0.5,) * 3, (0.25,) * 3,
                               torch.device("cpu"), progress=False))
    assert teacher.sizes == [110, 70]  # 1024·32²/96² = 113 images → 11 steps of 10 per forward
    teacher.sizes.clear()
    one = list(generate_steps(teacher, images, plan, ids, RelabelConfig(crop_scale=[0.08, 1.0], flip=True), (0.5,) * 3, (0.25,) * 3,
                              torch.device("cpu"), chunk_images=1000, progress=False))
    assert teacher.sizes == [180]
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(recs, one))
    teacher.sizes.clear()
    list(generate_steps(teacher, images, plan, [0, 1], RelabelConfig(crop_scale=[0.08, 1.0], flip=True), (0.5,) * 3, (0.25,) * 3,
                        torch.device("cpu"), chunk_images=3, progress=False))
    assert teacher.sizes == [10, 10]  # at least one whole step per forward


# ---------------------------------------------------------------- autocast switch (finding e)


def test_autocast_key_is_checked_and_defaults_to_bf16():
    assert load_config(DEMO).autocast == "bf16"
    assert load_config(DEMO, ["autocast=off"]).autocast == "off"  # YAML's bare off is False: mapped back
    assert load_config(DEMO, ["autocast='off'"]).autocast == "off"
    with pytest.raises(ConfigError, match="autocast"):
        load_config(DEMO, ["autocast=fp16"])


def test_runtime_autocast_follows_the_mode():
    """Catches: ``off`` still enabling autocast on CUDA, or bf16 leaking onto the CPU."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert isinstance(autocast(cuda, "off"), contextlib.nullcontext)
    assert isinstance(autocast(cpu, "bf16"), contextlib.nullcontext)
    on = autocast(cuda, "bf16") if torch.cuda.is_available() else None
    if on is not None:
        assert isinstance(on, torch.autocast) and on.fast_dtype == torch.bfloat16


def test_fingerprints_include_autocast_only_when_not_default(digits_run):
    """Catches: the default changing every existing fingerprint, or ``off`` not marking any stage stale."""
    on, off = digits_run(), digits_run("autocast=off")
    refs = [StageRef("squeeze"), StageRef("class-stats"), StageRef("recover", "random_real"),
            StageRef("relabel", "random_real"), StageRef("prune", "random_real", label_variants(on)[0]),
            StageRef("validate", "random_real", label_variants(on)[0], "s")]
    for ref in refs:
        assert "autocast" not in stage_settings(on, ref)
        assert stage_settings(off, ref)["autocast"] == "off"
        assert fingerprint(stage_settings(on, ref)) != fingerprint(stage_settings(off, ref))


@pytest.mark.parametrize("mode", ["bf16", "off"])
def test_every_stage_forward_uses_the_configured_autocast(digits_run, monkeypatch, mode):
    """Catches: a stage that ignores the switch (always float32, or always bf16)."""
    seen: dict[str, set] = {}

    def spy(name):
        def ctx(device, m="bf16"):
            seen.setdefault(name, set()).add(m)
            return contextlib.nullcontext()
        return ctx

    for name, mod in (("recover", recover_mod), ("relabel", relabel_mod), ("validate", validate_mod)):
        monkeypatch.setattr(mod, "autocast", spy(name))
    import labeldistill.bnstats as bnstats_mod
    import labeldistill.squeeze as squeeze_mod

    monkeypatch.setattr(bnstats_mod, "autocast", spy("class-stats"))
    monkeypatch.setattr(squeeze_mod, "autocast", spy("squeeze"))
    cfg = digits_run(f"autocast={mode}", "squeeze.checkpoint=null", "squeeze.epochs=1", "recover.modes=[lpld]",
                     "recover.iterations=2", "recover.ipc=1", f"run_dir={digits_run().run_dir}_{mode}")
    from labeldistill.bnstats import class_stats

    squeeze(cfg)
    class_stats(cfg)
    recover(cfg, "lpld")
    store = relabel(cfg, "lpld")
    validate_mod.validate(cfg, "lpld", 1.0, store_path=store.path)
    assert seen == {k: {mode} for k in ("squeeze", "class-stats", "recover", "relabel", "validate")}
    assert len(LabelStore(store.path)) > 0


def test_faster_replay_gives_the_batches_of_the_reference_formula():
    """Catches: the row-wise in-place flip or the in-place normalisation changing a single bit of a replayed
    batch (stored logits were computed on the old formula's batches)."""
    from kornia.geometry.transform import crop_and_resize, hflip

    from labeldistill.augment import boxes_to_corners
    from labeldistill.data import normalize

    g = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (20, 3, 31, 29), generator=g, dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    flipped = 0
    for rec in _record(20, (31, 29), cutmix=0.0):
        x = u8[rec.sample_idx].float() / 255
        ref = crop_and_resize(x, boxes_to_corners(rec.boxes), (31, 29), mode="bilinear", align_corners=True)
        ref = torch.where(rec.flips.view(-1, 1, 1, 1), hflip(ref), ref)
        assert torch.equal(build_batch(u8, rec, (31, 29), mean, std), normalize(ref, mean, std))
        flipped += int(rec.flips.sum())
    assert flipped > 0


def test_uint8_to_float_conversion_is_bitwise_the_whole_set_conversion_for_every_value():
    """Catches: a one-pass conversion (``torch.div(u8, 255.0)``) that rounds any of the 256 values differently."""
    v = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(4, 3, 16, 16).contiguous()
    f32 = v.float().div_(255.0)
    for rec in _record(4, (16, 16)):
        assert torch.equal(build_batch(v, rec, (16, 16), (0.3,) * 3, (0.7,) * 3),
                           build_batch(f32, rec, (16, 16), (0.3,) * 3, (0.7,) * 3))
