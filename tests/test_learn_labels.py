"""Unit tests of label distillation: second-order gradient, ridge solve, base examples, labels, loop pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeldistill.data import load_dataset
from labeldistill.errors import ConfigError, DataError
from labeldistill.learn_labels.base_examples import select_base_examples
from labeldistill.learn_labels.config import load_ld_config
from labeldistill.learn_labels.labels import LearnedLabels, project_rows, soft_cross_entropy, uniform_labels
from labeldistill.learn_labels.ld import LDMetaLearner, profile_outer_step, unrolled_outer_loss
from labeldistill.learn_labels.learners import MinibatchSampler, OptimizerSpec, PlateauTracker, outer_steps_per_epoch
from labeldistill.learn_labels.meta import meta_train, validation_steps
from labeldistill.learn_labels.metatest import step_checkpoints
from labeldistill.learn_labels.rr import RRLearner, RRMetaLearner, ridge_solve, with_bias
from labeldistill.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _tiny_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp", num_classes=3, in_channels=1, image_size=3, hidden=5, depth=1).double()


def _tiny_problem(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    xb = torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64)
    y = torch.softmax(torch.randn(8, 3, generator=g, dtype=torch.float64), dim=1)
    xt = torch.randn(12, 1, 3, 3, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 3, (12,), generator=g)
    return xb, y, xt, yt


@pytest.mark.parametrize("k", [1, 2])
def test_ld_meta_gradient_matches_central_differences(k):
    """d L_out(θ_k(ỹ)) / dỹ through k unrolled SGD steps equals a float64 finite-difference estimate."""
    model = _tiny_mlp()
    xb, y0, xt, yt = _tiny_problem()
    halves = [torch.arange(0, 4), torch.arange(4, 8)]
    lr = 0.5  # a large step makes the label → loss dependence (second-order only) well above round-off

    def outer(y: torch.Tensor) -> torch.Tensor:
        inner = [(xb[halves[j % 2]], y[halves[j % 2]]) for j in range(k)]
        return unrolled_outer_loss(model, inner, xt, yt, lr)[0]

    y = y0.clone().requires_grad_(True)
    (analytic,) = torch.autograd.grad(outer(y), y)
    eps = 1e-6
    numeric = torch.zeros_like(y0)
    for i in range(y0.shape[0]):
        for c in range(y0.shape[1]):
            plus, minus = y0.clone(), y0.clone()
            plus[i, c] += eps
            minus[i, c] -= eps
            numeric[i, c] = (outer(plus.requires_grad_()) - outer(minus.requires_grad_())).detach() / (2 * eps)
    assert analytic.abs().max() > 1e-4  # the labels really influence the outer loss
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_ld_unroll_returns_first_inner_gradient_and_leaves_model_untouched():
    model = _tiny_mlp()
    xb, y, xt, yt = _tiny_problem()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, logits, grads = unrolled_outer_loss(model, [(xb, y)], xt, yt, 0.1)
    expected = torch.autograd.grad(soft_cross_entropy(model(xb), y), list(model.parameters()))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)
        assert not g.requires_grad
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    assert logits.shape == (12, 3)


def test_ld_step_with_batchnorm_keeps_running_stats_and_moves_labels_and_model():
    torch.manual_seed(0)
    make = lambda: create_model("convnet", 4, 1, 8, width=4, depth=1, norm="batch")  # noqa: E731
    variant = LDMetaLearner(make, model_lr=1e-2, inner_lr=0.1, inner_steps=2)
    stats = {n: b.clone() for n, b in variant.model.named_buffers()}
    weights = [p.detach().clone() for p in variant.model.parameters()]
    labels = LearnedLabels(uniform_labels(6, 4), "prob", lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x_base, x_t = torch.randn(6, 1, 8, 8, generator=g), torch.randn(16, 1, 8, 8, generator=g)
    y_t = torch.randint(0, 4, (16,), generator=g)
    inner = [torch.arange(3), torch.arange(3, 6)]
    _, logits, _ = unrolled_outer_loss(variant.model, [(x_base[i], labels.probs()[i]) for i in inner], x_t, y_t, 0.1)
    err = variant.outer_step(labels, x_base, inner, x_t, y_t)
    assert err == float((logits.argmax(1) != y_t).float().mean())  # error of the unrolled model, before the step
    for n, b in variant.model.named_buffers():
        assert torch.equal(b, stats[n]), n
    assert any(not torch.equal(p, w) for p, w in zip(variant.model.parameters(), weights))
    y = labels.snapshot()
    assert not torch.allclose(y, uniform_labels(6, 4))
    assert (y >= 0).all() and torch.allclose(y.sum(1), torch.ones(6))


def test_profile_outer_step_graph_memory_grows_with_unrolled_steps():
    torch.manual_seed(0)
    make = lambda: create_model("mlp", 3, 1, 4, hidden=8, depth=1)  # noqa: E731
    x_base, x_t = torch.randn(10, 1, 4, 4), torch.randn(32, 1, 4, 4)
    y_t = torch.randint(0, 3, (32,))
    one = profile_outer_step(make, x_base, uniform_labels(10, 3), x_t, y_t, 1, 5, repeats=1)
    three = profile_outer_step(make, x_base, uniform_labels(10, 3), x_t, y_t, 3, 5, repeats=1)
    assert (one["inner_steps"], three["inner_steps"]) == (1, 3) and one["cuda_peak_bytes"] is None
    assert three["saved_tensor_bytes"] > one["saved_tensor_bytes"] > 0


def test_ridge_solve_matches_numpy_primal_solution_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    phi = with_bias(torch.randn(7, 11, generator=g, dtype=torch.float64))
    y = torch.softmax(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    lam = 0.7
    w = ridge_solve(phi, y, lam)
    p, t = phi.numpy(), y.numpy()
    primal = np.linalg.solve(p.T @ p + lam * np.eye(p.shape[1]), p.T @ t)
    np.testing.assert_allclose(w.numpy(), primal, rtol=1e-9, atol=1e-11)
    assert w.shape == (12, 4)
    # First-order optimality of ||Φ W − Y||² + λ ||W||².
    np.testing.assert_allclose(p.T @ (p @ w.numpy() - t) + lam * w.numpy(), 0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda a, b: ridge_solve(a, b, lam),
                                    (phi.clone().requires_grad_(), y.clone().requires_grad_()))


def test_rr_outer_step_updates_labels_head_and_scale():
    torch.manual_seed(0)
    make = lambda: create_model("mlp", 3, 1, 4, hidden=6, depth=1)  # noqa: E731
    variant = RRMetaLearner(make, 3, model_lr=1e-2, lam=1.0, ema=0.5, scale_lr=0.1)
    labels = LearnedLabels(uniform_labels(8, 3), "logits", lr=0.1)
    g = torch.Generator().manual_seed(0)
    x_base, x_t = torch.randn(8, 1, 4, 4, generator=g), torch.randn(20, 1, 4, 4, generator=g)
    y_t = torch.randint(0, 3, (20,), generator=g)
    for _ in range(3):
        variant.outer_step(labels, x_base, [torch.arange(8)], x_t, y_t)
    rr = variant.learner
    assert rr.H.shape == (7, 3) and rr.H.abs().sum() > 0 and not rr.H.requires_grad
    assert float(rr.scale.detach()) != 1.0
    y = labels.snapshot()
    assert not torch.allclose(y, uniform_labels(8, 3))
    assert torch.allclose(y.sum(1), torch.ones(8))
    variant.reset()
    assert variant.learner.H.abs().sum() == 0 and float(variant.learner.scale.detach()) == 1.0


def test_rr_learner_fits_separable_data():
    torch.manual_seed(0)
    model = create_model("mlp", 2, 1, 2, hidden=16, depth=1)
    learner = RRLearner(model, 2, OptimizerSpec("adam", 1e-2), lam=0.1, ema=0.3)
    x = torch.randn(40, 1, 2, 2)
    cls = (x.flatten(1)[:, 0] > 0).long()
    y = torch.nn.functional.one_hot(cls, 2).float()
    for _ in range(60):
        learner.train_step(x, y)
    assert (learner.predict(x).argmax(1) == cls).float().mean() > 0.9


def test_balanced_selection_counts_seed_and_exclusion():
    labels = load_dataset("digits", "train").labels
    a = select_base_examples(labels, 50, "balanced", 10, seed=1234)
    b = select_base_examples(labels, 50, "balanced", 10, seed=1234)
    c = select_base_examples(labels, 50, "balanced", 10, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 50
    assert torch.bincount(labels[a], minlength=10).tolist() == [5] * 10
    exclude = a[:25]
    d = select_base_examples(labels, 50, "balanced", 10, seed=1234, exclude=exclude)
    assert not set(d.tolist()) & set(exclude.tolist())
    assert torch.bincount(labels[d], minlength=10).tolist() == [5] * 10


def test_unbalanced_selection_and_errors():
    labels = load_dataset("digits", "train").labels
    a = select_base_examples(labels, 37, "unbalanced", 10, seed=3)
    assert torch.equal(a, select_base_examples(labels, 37, "unbalanced", 10, seed=3))
    assert len(set(a.tolist())) == 37 and int(a.max()) < len(labels)
    with pytest.raises(ConfigError, match="multiple"):
        select_base_examples(labels, 37, "balanced", 10, seed=3)
    with pytest.raises(DataError):
        select_base_examples(labels[:30], 40, "unbalanced", 10, seed=3)
    with pytest.raises(DataError, match="class"):
        select_base_examples(torch.zeros(30, dtype=torch.long), 20, "balanced", 2, seed=3)


def test_projection_and_parameterisations_stay_on_the_simplex():
    y = torch.tensor([[0.5, -0.2, 0.9], [-1.0, -2.0, -0.1], [2.0, 0.0, 0.0]])
    p = project_rows(y)
    torch.testing.assert_close(p[0], torch.tensor([0.5, 0.0, 0.9]) / 1.4)
    torch.testing.assert_close(p[1], torch.full((3,), 1 / 3))
    torch.testing.assert_close(p[2], torch.tensor([1.0, 0.0, 0.0]))
    for param in ("prob", "logits"):
        labels = LearnedLabels(uniform_labels(5, 3), param, lr=0.5)
        for i in range(4):
            labels.step(torch.randn(5, 3, generator=torch.Generator().manual_seed(i)))
        y = labels.snapshot()
        assert (y >= 0).all() and torch.allclose(y.sum(1), torch.ones(5)), param
        assert not torch.allclose(y, uniform_labels(5, 3)), param
    with pytest.raises(ConfigError, match="init_smoothing"):
        LearnedLabels(torch.eye(3), "logits")


def test_plateau_tracker_reports_length_at_the_minimum():
    tracker = PlateauTracker(window=3)
    errors = [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9]
    fired = [tracker.update(e) for e in errors]
    # Moving averages from step 3: .8 .7 .6 .533 .533 .6 .667 .8 .867; minimum at step 6, plateau 3 steps later.
    assert fired.index(True) == 8
    assert tracker.best_step == 6
    tracker.reset()
    assert tracker.step == 0 and not tracker.update(0.1)


def test_minibatch_sampler_covers_each_epoch_once():
    s = MinibatchSampler(10, 5, torch.Generator().manual_seed(0))
    first = torch.cat([s.next(), s.next()])
    assert sorted(first.tolist()) == list(range(10))
    assert len(s.next()) == 5


def test_minibatch_sampler_keeps_the_short_last_batch():
    s = MinibatchSampler(10, 4, torch.Generator().manual_seed(0), drop_last=False)
    one_pass = [s.next() for _ in range(s.batches_per_pass())]
    assert [len(b) for b in one_pass] == [4, 4, 2] and sorted(torch.cat(one_pass).tolist()) == list(range(10))
    assert len(s.next()) == 4  # the next pass starts a new permutation
    assert MinibatchSampler(10, 4, torch.Generator(), drop_last=True).batches_per_pass() == 2
    assert outer_steps_per_epoch(3500, 1024) == 4 and outer_steps_per_epoch(3500, 1024, "drop") == 3
    assert outer_steps_per_epoch(50000, 1024) * 400 == 19600  # the paper's MNIST budget (spec §7)


@pytest.mark.parametrize("last_batch,updates,sizes", [("keep", 8, {1024, 428}), ("drop", 6, {1024})])
def test_label_updates_per_epoch_follow_the_reference_loader(last_batch, updates, sizes):
    """3,500 targets at batch 1,024 for 2 epochs: the reference's loader keeps the short batch (⌈3500/1024⌉ = 4
    updates per epoch, 8 in all); ``drop`` gives 3 per epoch."""
    torch.manual_seed(0)
    make = lambda: create_model("mlp", 3, 1, 2, hidden=4, depth=1)  # noqa: E731
    meta_learner = RRMetaLearner(make, 3, model_lr=1e-2, lam=1.0, ema=0.5, scale_lr=0.1)
    seen = []
    step = meta_learner.outer_step
    meta_learner.outer_step = lambda labels, xb, idx, xt, yt: seen.append(len(xt)) or step(labels, xb, idx, xt, yt)
    g = torch.Generator().manual_seed(0)
    x_base, x_t = torch.randn(6, 1, 2, 2, generator=g), torch.randn(3500, 1, 2, 2, generator=g)
    y_t = torch.randint(0, 3, (3500,), generator=g)
    out = meta_train(meta_learner, LearnedLabels(uniform_labels(6, 3), "logits", lr=0.1), x_base, x_t, y_t,
                     x_t[:30], y_t[:30], epochs=2, outer_batch=1024, inner_batch=6, inner_steps=1, window=50,
                     val_every=5, max_steps=5, seed=0, last_batch=last_batch)
    assert out.outer_steps == updates == len(seen) and set(seen) == sizes


def test_step_rules():
    assert step_checkpoints(1000, 100)[:5] == (10, 25, 50, 75, 100) and step_checkpoints(1000, 100)[-1] == 1000
    assert step_checkpoints(1701, 500) == (10, 25, 75, 101, 201, 301, 401, 501, 601, 701, 801, 901, 1001, 1101,
                                           1201, 1301, 1401, 1501, 1601, 1701)
    assert step_checkpoints(60, 10) == (10, 25, 50, 60)
    assert validation_steps([], 40, 1000) == 40
    assert validation_steps([100, 200, 300, 400], 5, 1000) == 300
    assert validation_steps([5000], 5, 1000) == 1000


def test_config_rejects_bad_values(tmp_path):
    cfg = load_ld_config(None, ["base.n=20", "meta.inner_batch=10"])
    assert cfg.reset_window() == 50 and cfg.max_steps() == 1000
    assert load_ld_config(None, ["base.n=500"]).reset_window() == 200
    for bad, msg in [("methods=[ld, magic]", "unknown method"), ("labels.param=bits", "labels.param"),
                     ("metatest.optimizers=[rmsprop]", "optimizer"), ("meta.inner_batch=500", "inner_batch"),
                     ("meta.last_batch=sometimes", "meta.last_batch"), ("nonsense=1", "unknown config key")]:
        with pytest.raises(ConfigError, match=msg):
            load_ld_config(None, [bad])
    with pytest.raises(ConfigError, match="init_smoothing"):
        load_ld_config(None, ["labels.param=logits", "labels.init=onehot"])


def test_validation_split_never_contains_base_examples_and_does_not_move_them():
    from labeldistill.learn_labels.run import prepare_task

    tasks = [prepare_task(load_ld_config(None, ["data.target=digits", f"data.val_size={v}", "base.n=50"]),
                          torch.device("cpu")) for v in (100, 400)]
    small, large = tasks
    assert torch.equal(small.base_indices, large.base_indices)
    for t, v in zip(tasks, (100, 400)):
        assert len(t.val_indices) == v and len(t.x_val) == v
        assert not set(t.val_indices.tolist()) & set(t.base_indices.tolist())
        assert len(t.x_target) == 1437 - v  # the rest of the train split gives the outer-loss batches
    assert set(small.val_indices.tolist()) <= set(large.val_indices.tolist())
    with pytest.raises(ConfigError, match="val_size"):
        prepare_task(load_ld_config(None, ["data.target=digits", "data.val_size=1400", "base.n=50"]),
                     torch.device("cpu"))
