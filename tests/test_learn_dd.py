"""DD (image learning with LD's second-order machinery, issue #13 item 7) and the teacher split check (item 4)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from labeldistill.errors import ConfigError
from labeldistill.leaderboard import load_rows
from labeldistill.learn_labels import learn_labels, load_ld_config
from labeldistill.learn_labels.dd import DDMetaLearner, LearnedImages, initial_images
from labeldistill.learn_labels.labels import LearnedLabels, onehot_labels
from labeldistill.learn_labels.ld import unrolled_outer_loss
from labeldistill.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp", num_classes=3, in_channels=1, image_size=3, hidden=6, depth=1)


def _problem(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    xb = torch.randn(6, 1, 3, 3, generator=g)
    yb = torch.tensor([0, 1, 2, 0, 1, 2])
    xt = torch.randn(30, 1, 3, 3, generator=g)
    yt = torch.randint(0, 3, (30,), generator=g)
    return xb, yb, xt, yt


def test_dd_pixel_meta_gradient_matches_central_differences():
    """d L_out(θ_1(x̃)) / dx̃ through one unrolled SGD step equals a float64 finite-difference estimate."""
    model = _mlp().double()
    xb, yb, xt, yt = _problem()
    xb, xt = xb.double(), xt.double()
    y = onehot_labels(yb, 3).double()

    def outer(x: torch.Tensor) -> torch.Tensor:
        return unrolled_outer_loss(model, [(x, y)], xt, yt, 0.5)[0]

    x = xb.clone().requires_grad_(True)
    (analytic,) = torch.autograd.grad(outer(x), x)
    numeric = torch.zeros_like(xb)
    eps = 1e-6
    for i in range(xb.numel()):
        plus, minus = xb.clone().flatten(), xb.clone().flatten()
        plus[i] += eps
        minus[i] -= eps
        numeric.view(-1)[i] = (outer(plus.view_as(xb)) - outer(minus.view_as(xb))).detach() / (2 * eps)
    assert analytic.abs().max() > 1e-4
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_dd_outer_steps_reduce_outer_loss_keep_labels_onehot_and_change_images():
    xb, yb, xt, yt = _problem()
    frozen = _mlp()
    images = LearnedImages(initial_images(xb, "real", 0), lr=0.05)
    labels = LearnedLabels(onehot_labels(yb, 3), "prob", 1e-3)
    before_labels = labels.snapshot()
    # model_lr ~ 0: the online model stays at θ0, so the outer loss at θ0 must fall as the pixels learn.
    dd = DDMetaLearner(lambda: _mlp(), images, model_lr=1e-12, inner_lr=0.5, inner_steps=1)
    idx = [torch.arange(6)]

    def loss_now() -> float:
        loss = unrolled_outer_loss(frozen, [(images.raw.detach(), labels.probs().detach())], xt, yt, 0.5)[0]
        return float(loss.detach())

    start = loss_now()
    for _ in range(15):
        dd.outer_step(labels, xb, idx, xt, yt)
    assert loss_now() < start - 0.01
    assert torch.equal(labels.snapshot(), before_labels)  # labels stay one-hot
    assert (images.snapshot() - xb).abs().max() > 0.05  # pixels moved
    assert torch.equal(dd.base_images(xb), images.snapshot())
    noise = initial_images(xb, "noise", 3)
    assert noise.shape == xb.shape and not torch.equal(noise, xb) and torch.equal(noise, initial_images(xb, "noise", 3))


TINY = {
    "name": "tiny", "threads": 1, "seed": 0,
    "data": {"target": "digits", "val_size": 200},
    "base": {"n": 20, "seed": 7},
    "learner": {"name": "mlp", "args": {"hidden": 16, "depth": 1}},
    "meta": {"epochs": 2, "outer_batch": 128, "inner_batch": 10, "val_every": 1, "max_steps": 30},
    "teacher": {"model": {"name": "mlp", "args": {"hidden": 16, "depth": 1}}, "epochs": 2, "batch_size": 64},
    "metatest": {"repeats": 1, "optimizers": ["adam"], "rr_learner": False},
    "plot_examples": 0,
}


def _cfg(tmp_path, run: str, *overrides: str):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return load_ld_config(path, [f"run_dir={tmp_path / run}", *overrides])


def test_dd_run_learns_images_with_onehot_labels_and_labels_from_reuses_them(tmp_path):
    common = ["methods=[dd, onehot]", "dd.lr=0.05", "metatest.step_rule=val", "metatest.lrs.adam=0.01"]
    res = learn_labels(_cfg(tmp_path, "a", *common))
    t = load_file(str(tmp_path / "a" / "labels.safetensors"))
    assert torch.equal(t["dd"], t["onehot"])  # DD keeps the base examples' one-hot labels
    base = t["base_images"].float() / 255.0
    assert t["dd_images"].shape == base.shape
    manifest = json.loads((tmp_path / "a" / "labels.json").read_text())
    assert manifest["methods"]["dd"]["learns"] == "images"
    rows = {r["method"]: r for r in res["rows"]}
    board = {r["labels"]: r for r in load_rows(tmp_path / "a")}  # leaderboard: float32 pixels, not uint8 images
    assert board["dd"]["images"] == "learned images (dd)" and board["dd"]["image_bytes"] == t["dd_images"].numel() * 4
    assert board["onehot"]["image_bytes"] == t["base_images"].numel()
    # dd's meta-test trains on the learned images (same one-hot labels as onehot, other validation curve), and
    # a metatest-only run (labels_from) reads them back from disk: the same curve and accuracies again
    assert rows["dd"]["val_curve"] != rows["onehot"]["val_curve"]
    again = learn_labels(_cfg(tmp_path, "b", *common, f"labels_from={tmp_path / 'a'}"))
    rows_b = {r["method"]: r for r in again["rows"]}
    for m in ("dd", "onehot"):
        assert (rows_b[m]["val_curve"], rows_b[m]["top1_all"]) == (rows[m]["val_curve"], rows[m]["top1_all"])


def test_reused_teacher_that_saw_the_validation_split_is_refused(tmp_path):
    learn_labels(_cfg(tmp_path, "a", "methods=[teacher]"))
    teacher = tmp_path / "a" / "teacher"
    info = json.loads((teacher / "teacher.json").read_text())
    assert set(info["split"]) >= {"train_fingerprint", "val_fingerprint", "dataset", "n_train"}
    # same validation split (same base examples and split seed): accepted
    learn_labels(_cfg(tmp_path, "same", "methods=[teacher]", f"teacher.checkpoint={teacher}"))
    # other base examples → another validation split, most of which the teacher was trained on: refused
    with pytest.raises(ConfigError, match=r"trained on \d+ of this run's 200 validation images"):
        learn_labels(_cfg(tmp_path, "other", "methods=[teacher]", "base.seed=8", f"teacher.checkpoint={teacher}"))
    # a teacher without its split record cannot be shown clean: refused
    (teacher / "split.safetensors").unlink()
    with pytest.raises(ConfigError, match="records no training split"):
        learn_labels(_cfg(tmp_path, "legacy", "methods=[teacher]", f"teacher.checkpoint={teacher}"))
