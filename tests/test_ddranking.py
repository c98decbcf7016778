"""DD-Ranking both ways (issue 20, item 1), checked against DD-Ranking's own formulas.

ddranking 0.2.0 cannot be installed here (it pins numpy<2 and scipy<1.16), so its formulas are restated below from
its code (ddranking 0.2.0 wheel, PyPI):

* ``ddranking/loss/kl.py``, ``KLDivergenceLoss.forward(stu_outputs, tea_outputs)``: target ``softmax(tea_outputs /
  T)``, loss ``kl_div(log_softmax(stu_outputs / T), target, 'batchmean')``, times ``T²`` when ``scale_loss``.
* ``ddranking/metrics/soft_label.py``, ``_generate_soft_labels(images)``: ``teacher_model(images)`` on the image
  tensor as given (mode ``S``); ``compute_metrics``: hard labels ``[i] * ipc`` for ``i in range(num_classes)``
  (class-major).
* ``ddranking/utils/data.py``, ``get_dataset``: real images are ``ToTensor()`` + ``Normalize(mean, std)``.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from labeldistill.cli import main
from labeldistill.config import load_config
from labeldistill.data import normalize
from labeldistill.data.owned import load_own_set
from labeldistill.data.synthetic import load_synthetic
from labeldistill.errors import ConfigError, DataError, LabelDistillError
from labeldistill.export import export_ddranking
from labeldistill.labels.store import LabelStore
from labeldistill.layout import RunLayout
from labeldistill.models.checkpoint import load_teacher
from labeldistill.labels.loader import StoredStepDataset
from labeldistill.validate import kd_loss

from conftest import REPO, TINY_OVERRIDES, needs_fmnist

MODE = "lpld"
T = 4.0


def ddranking_kl_target(tea_outputs: torch.Tensor, temperature: float) -> torch.Tensor:
    """ddranking 0.2.0 ``loss/kl.py``: the teacher side of ``KLDivergenceLoss``."""
    return F.softmax(tea_outputs / temperature, dim=1)


def ddranking_kl_loss(stu: torch.Tensor, tea: torch.Tensor, temperature: float, scale_loss: bool) -> torch.Tensor:
    """ddranking 0.2.0 ``loss/kl.py``: ``KLDivergenceLoss(temperature, scale_loss)(stu, tea)``."""
    loss = F.kl_div(F.log_softmax(stu / temperature, dim=1), ddranking_kl_target(tea, temperature),
                    reduction="batchmean")
    return loss * temperature ** 2 if scale_loss else loss


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run's ``lpld`` images exported for DD-Ranking (teacher logits)."""
    cfg, _ = tiny_run
    out = export_ddranking(cfg.run_path, MODE, out=tmp_path_factory.mktemp("ddr") / "export", device="cpu")
    return cfg, out


def _run_images(cfg):
    """The run's images of ``MODE``: uint8 ``(N, C, H, W)`` and labels, class-major."""
    lay = RunLayout(cfg.run_path)
    info = json.loads((lay.teacher_dir / "teacher.json").read_text())
    data, _ = load_synthetic(lay.images_dir(MODE), info["mean"], info["std"])
    order = torch.argsort(data.labels, stable=True)
    return data.images[order], data.labels[order], info


@needs_fmnist
def test_exported_images_are_normalised_run_images(exported):
    cfg, out = exported
    u8, labels, info = _run_images(cfg)
    x = torch.load(out / "images.pt")
    meta = json.loads((out / "meta.json").read_text())
    assert x.dtype == torch.float32 and x.shape == u8.shape and float(x.min()) < 0  # normalised, not [0, 1]
    m = torch.tensor(meta["normalization"]["mean"]).view(1, -1, 1, 1)
    s = torch.tensor(meta["normalization"]["std"]).view(1, -1, 1, 1)
    assert meta["normalization"] == {"mean": info["mean"], "std": info["std"]}
    assert float((x * s + m - u8.float() / 255).abs().max()) < 1 / 255  # within one grey level
    assert meta["hard_labels"] == labels.tolist() == sorted(meta["hard_labels"])  # class-major
    assert meta["classes"] == info["classes"] and meta["class_to_idx"] == {c: i for i, c in enumerate(info["classes"])}
    assert meta["ipc"] == 2 and meta["mode"] == MODE and meta["labels_from"] == "teacher"
    assert meta["teacher"]["fingerprint"] == info["fingerprint"] and meta["teacher"]["top1"] == info["top1"]


@needs_fmnist
def test_ddranking_kl_target_on_export_is_the_teachers(exported):
    """DD-Ranking's KL target on labels.pt = softmax(teacher logits / T) on the run's images; and labels.pt is what
    its mode S makes itself (``teacher_model(image_tensor)``)."""
    cfg, out = exported
    u8, _, info = _run_images(cfg)
    teacher, _ = load_teacher(RunLayout(cfg.run_path).teacher_dir, torch.device("cpu"))
    z = torch.load(out / "labels.pt")
    with torch.no_grad():
        mine = teacher(normalize(u8.float() / 255, info["mean"], info["std"]))
        mode_s = teacher(torch.load(out / "images.pt"))  # _generate_soft_labels on the exported image_tensor
    assert z.dtype == torch.float32 and z.shape == (20, 10)
    assert torch.allclose(z, mode_s, atol=1e-5)
    target = ddranking_kl_target(z, T)
    assert torch.allclose(target, torch.softmax(mine / T, 1), atol=1e-5)
    assert float((target - 0.1).abs().max()) > 0.02  # not the near-uniform target of softmaxed probabilities
    stu = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ddranking_kl_loss(stu, z, T, True), kd_loss(stu, torch.softmax(z / T, 1), T, True))


@needs_fmnist
def test_export_import_round_trip(exported):
    cfg, out = exported
    u8, labels, info = _run_images(cfg)
    own = load_own_set("tensor", out, tuple(info["shape"]), info["classes"])
    assert torch.equal(own.images, u8) and torch.equal(own.labels, labels)  # exact: the pixels were on the grid
    assert torch.equal(own.logits, torch.load(out / "labels.pt"))
    assert own.float_images is None and own.notes["quantised"]["max_error_grey_levels"] < 0.01
    assert own.notes["normalization"]["from"] == "meta.json" and own.notes["hard_labels_from"] == "meta.json"
    assert "class_names_in_source" not in own.notes and own.notes["ipc"] == 2


@needs_fmnist
def test_store_labels_are_mean_logits(tiny_run, tmp_path):
    cfg, _ = tiny_run
    out = export_ddranking(cfg.run_path, MODE, out=tmp_path / "s", labels="store", device="cpu")
    z, meta = torch.load(out / "labels.pt"), json.loads((out / "meta.json").read_text())
    store = LabelStore(RunLayout(cfg.run_path).full_store(MODE))
    rec = store.get(store.step_ids[0])  # no CutMix in the tiny run: every view counts
    i = int(rec.sample_idx[0])
    views = [r.logits[r.sample_idx == i].float() for r in map(store.get, store.step_ids)]
    assert torch.allclose(z[i], torch.cat(views).mean(0), atol=1e-4)  # logits, not probabilities
    assert meta["labels_from"] == "store" and meta["source_store"].endswith("full")
    with pytest.raises(LabelDistillError, match="unknown export labels"):
        export_ddranking(cfg.run_path, MODE, labels="probs")


def _tensor_set(folder, x, y, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(x, folder / "images.pt")
    torch.save(y, folder / "labels.pt")
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_normalised_images_need_a_mean_and_std(tmp_path):
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (4, 1, 8, 8), generator=g, dtype=torch.uint8)
    mean, std = [0.3], [0.2]
    x = (u8.float() / 255 - 0.3) / 0.2
    z = torch.randn(4, 2, generator=g)
    d = _tensor_set(tmp_path / "a", x, z)
    with pytest.raises(DataError, match="normalised images need their mean and std"):
        load_own_set("tensor", d, (1, 8, 8), ["a", "b"])
    own = load_own_set("tensor", d, (1, 8, 8), ["a", "b"], mean, std)  # from the config
    assert torch.equal(own.images, u8) and own.notes["normalization"]["from"] == "config"
    assert own.labels.tolist() == [0, 0, 1, 1] and own.notes["hard_labels_from"].startswith("class-major")
    assert torch.equal(own.logits, z)
    _tensor_set(d, x, z, {"normalization": {"mean": mean, "std": std}})  # not marked normalised: not applied
    with pytest.raises(DataError, match="normalised images need their mean and std"):
        load_own_set("tensor", d, (1, 8, 8), ["a", "b"])
    _tensor_set(d, x, z, {"normalised": True, "normalization": {"mean": mean, "std": std}})
    assert torch.equal(load_own_set("tensor", d, (1, 8, 8), ["a", "b"]).images, u8)  # from meta.json
    with pytest.raises(DataError, match="check the mean and std"):
        load_own_set("tensor", d, (1, 8, 8), ["a", "b"], [0.0], [1.0])  # the config's wins, and is wrong


def test_soft_label_checks(tmp_path):
    x = torch.rand(4, 1, 8, 8)
    d = _tensor_set(tmp_path / "p", x, torch.softmax(torch.randn(4, 2), 1))
    with pytest.raises(DataError, match="holds probabilities.*save their log"):
        load_own_set("tensor", d, (1, 8, 8), ["a", "b"])
    _tensor_set(d, x, torch.randn(4, 3))
    with pytest.raises(DataError, match="over 3 classes but the teacher has 2"):
        load_own_set("tensor", d, (1, 8, 8), ["a", "b"])
    _tensor_set(d, x, torch.randn(4, 2), {"classes": ["b", "a"]})
    with pytest.raises(DataError, match="gives class 'b' index 0 but the teacher's index of 'b' is 1"):
        load_own_set("tensor", d, (1, 8, 8), ["a", "b"])
    _tensor_set(d, x, torch.randn(4, 2), {"hard_labels": [1, 0, 1, 0]})
    own = load_own_set("tensor", d, (1, 8, 8), ["a", "b"])
    assert own.labels.tolist() == [0, 0, 1, 1] and torch.equal(own.images[0], (x[1] * 255).round().byte())


def test_off_grid_pixels_are_measured(tmp_path):
    x = torch.full((2, 1, 8, 8), 0.5)  # 127.5 grey levels: half a level off the grid
    own = load_own_set("tensor", _tensor_set(tmp_path / "f", x, torch.tensor([0, 1])), (1, 8, 8), ["a", "b"])
    assert own.notes["quantised"]["max_error_grey_levels"] == 0.5 and torch.equal(own.float_images, x)
    x = torch.full((2, 1, 8, 8), 128 / 255)
    own = load_own_set("tensor", _tensor_set(tmp_path / "g", x, torch.tensor([0, 1])), (1, 8, 8), ["a", "b"])
    assert own.float_images is None and int(own.images[0, 0, 0, 0]) == 128


def test_config_checks():
    with pytest.raises(ConfigError, match="give both mean and std"):
        load_config(None, ["recover.variants={dd: {source: tensor, path: x, mean: [0.5]}}", "recover.modes=[dd]"])
    with pytest.raises(ConfigError, match="mean/std apply to source: tensor only"):
        load_config(None, ["recover.variants={dd: {source: folder, path: x, mean: [0.5], std: [0.5]}}",
                           "recover.modes=[dd]"])
    with pytest.raises(ConfigError, match="recover mode 'sre2l' is not a source: tensor set"):
        load_config(None, ["validate.label_source=static", "recover.modes=[sre2l]"])
    cfg = load_config(None, ["recover.variants={dd: {source: tensor, path: x, mean: [0.5], std: [0.25]}}",
                             "recover.modes=[dd]", "validate.label_source=static"])
    assert cfg.validate.label_source == "static"


@needs_fmnist
def test_static_targets_are_the_images_logits(tiny_run):
    """label_source: static: each entry's target is softmax(z_i / T) of its own image, whatever the replay did."""
    cfg, _ = tiny_run
    lay = RunLayout(cfg.run_path)
    store = LabelStore(lay.full_store(MODE))
    data, _ = load_synthetic(lay.images_dir(MODE), (0.5,), (0.5,))
    z = torch.randn(len(data), 10, generator=torch.Generator().manual_seed(3)) * 3
    ds = StoredStepDataset(store, data.images, T, image_logits=z)
    g = store.step_ids[1]
    x, t = ds[g]
    assert torch.allclose(t, torch.softmax(z[store.get(g).sample_idx] / T, 1))
    assert torch.equal(x, StoredStepDataset(store, data.images, T)[g][0])  # the same replayed pixels


@needs_fmnist
def test_import_export_and_train_on_its_labels(exported, tmp_path, capsys):
    """Export → ``source: tensor`` import in a fresh run (the same teacher as a checkpoint) → relabel → validate
    with ``label_source: static``; the dry run afterwards calls every stage done."""
    cfg, out = exported
    teacher = RunLayout(cfg.run_path).teacher_dir / "model.safetensors"
    over = TINY_OVERRIDES + [f"run_dir={tmp_path}", "name=dd", f"squeeze.checkpoint={teacher}",
                             f"recover.variants={{dd: {{source: tensor, path: '{out}'}}}}", "recover.modes=[dd]",
                             "prune.factors=[1]", "validate.label_source=static", "validate.epochs=2", "device=cpu"]
    c2 = load_config(REPO / "configs" / "fmnist_demo.yaml", over)
    from labeldistill.pipeline import run

    res = run(c2)
    lay = RunLayout(c2.run_path)
    img = json.loads((lay.images_dir("dd") / "images.json").read_text())
    assert img["source"] == "tensor" and img["soft_labels"]["file"] == "image_logits.safetensors"
    row = res["rows"][0]
    f = lay.images_dir("dd") / "image_logits.safetensors"
    assert row["label_source"] == "static" and row["label_file"] == "images/dd/image_logits.safetensors"
    assert row["label_bytes"] == f.stat().st_size and 0 <= row["top1"] <= 1
    from labeldistill.data.synthetic import load_image_logits

    assert torch.equal(load_image_logits(lay.images_dir("dd"), img["fingerprint"]), torch.load(out / "labels.pt"))
    cfg_file = tmp_path / "c.yaml"
    from labeldistill.config import dump_config

    dump_config(c2, cfg_file)
    capsys.readouterr()
    assert main(["run", str(cfg_file), "--dry-run", "--no-probe", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert all(s["done"] for s in plan["stages"]), [(s["stage"], s["status"]) for s in plan["stages"]]
    assert plan["validate"][0]["labels"] == "static"
    from labeldistill.leaderboard import load_rows

    lb = [r for r in load_rows(tmp_path) if r["kind"] == "main"][0]
    assert lb["labels"] == "static per-image logits (x1 random)" and lb["codec"] == "float32 logits"
    assert lb["label_bytes"] == row["label_bytes"]


@needs_fmnist
def test_recover_reports_rounding_off_the_grid(exported, tmp_path, capsys):
    """Float pixels off the 1/255 grid: rounded for the PNG set, with the largest error and the teacher's top-1
    before and after in images.json and one warning line."""
    from labeldistill.recover import own_images
    from labeldistill.variants import resolve_mode

    cfg, out = exported
    meta = json.loads((out / "meta.json").read_text())
    x = torch.load(out / "images.pt")
    x = x + torch.where(x < 0, 0.4, -0.4) / 255 / meta["normalization"]["std"][0]  # 0.4 grey levels off
    d = _tensor_set(tmp_path / "off", x, torch.load(out / "labels.pt"), meta)
    teacher, info = load_teacher(RunLayout(cfg.run_path).teacher_dir, torch.device("cpu"))
    mode = resolve_mode("off", {"off": {"source": "tensor", "path": str(d)}})
    images, extra, logits = own_images("off", mode, teacher, info, torch.device("cpu"), "off")
    q = extra["quantised"]
    assert 0.39 < q["max_error_grey_levels"] <= 0.5 and 0 <= q["teacher_top1_before"] <= 1
    assert torch.equal(logits, torch.load(out / "labels.pt")) and images.shape == x.shape
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: recover[off]") and "grey levels" in err[0]


def test_dry_run_row_of_a_corrupt_tensor_set_is_one_data_error(tmp_path):
    """The dry run reads a tensor set's labels.pt through the same safe reader as recover (DataError, not a traceback)."""
    from labeldistill.plan.stages import _own_row
    from labeldistill.variants import resolve_mode

    torch.save(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), tmp_path / "images.pt")
    (tmp_path / "labels.pt").write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.raises(DataError, match="labels.pt"):
        _own_row(resolve_mode("t", {"t": {"source": "tensor", "path": str(tmp_path)}}), ["a", "b"], (1, 8, 8))
