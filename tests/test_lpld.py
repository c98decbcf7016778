"""LPLD switches on the tiny real run: recover modes, metric pruning, epoch pools, top-k, accounting, export."""

import dataclasses
import json

import pytest
import torch

from labeldistill.data import load_split
from labeldistill.layout import RunLayout
from labeldistill.errors import ConfigError, DataError
from labeldistill.labels.accounting import store_report
from labeldistill.labels.pool import select_steps
from labeldistill.labels.prune import parse_strategy, prune_store, step_score
from labeldistill.labels.relabel import relabel
from labeldistill.labels.store import LabelStore
from labeldistill.recover import load_synthetic, min_crop_scale, pick_real, plan_batches, recover
from labeldistill.validate import PoolSampler, validate
from labeldistill.variants import RecoverMode, resolve_mode

from conftest import needs_fmnist


def test_recover_modes_are_orthogonal_switches():
    assert resolve_mode("sre2l").batching == "cross_class"
    assert resolve_mode("c") == RecoverMode("synthesis", "class_wise", "global", "fixed")
    assert resolve_mode("cs") == resolve_mode("lpld")
    assert resolve_mode("cda").crop_schedule == "cda"
    mine = resolve_mode("mine", {"mine": {"batching": "class_wise", "crop_schedule": "cda"}})
    assert mine.bn_targets == "global" and mine.crop_schedule == "cda"
    with pytest.raises(ConfigError, match="class_wise"):
        resolve_mode("bad", {"bad": {"bn_targets": "class"}})  # class targets need class-wise batches
    with pytest.raises(ConfigError, match="unknown recover mode"):
        resolve_mode("dm")


def test_recover_mode_is_frozen_and_records_the_mapping_fingerprints_always_held():
    """``as_dict`` is what fingerprints, resume keys and images.json record: the key order and values of the
    plain mapping these switches were before the record existed, so no finished run turns stale."""
    assert list(resolve_mode("c").as_dict().items()) == [("source", "synthesis"), ("batching", "class_wise"),
                                                          ("bn_targets", "global"), ("crop_schedule", "fixed")]
    assert resolve_mode("rded").as_dict() == {"source": "rded"}
    own = resolve_mode("dd", {"dd": {"source": "tensor", "path": "x", "mean": [1], "std": [0.5]}})
    assert list(own.as_dict().items()) == [("source", "tensor"), ("path", "x"), ("mean", [1.0]), ("std", [0.5])]
    assert resolve_mode("f", {"f": {"source": "folder", "path": "y"}}).as_dict() == {"source": "folder", "path": "y"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        own.path = "z"


def test_batch_plans_cover_every_slot_once():
    for batching in ("cross_class", "class_wise"):
        batches = plan_batches(batching, 10, 7, 4)
        slots = [s for b in batches for s in b]
        assert sorted(slots) == [(c, k) for c in range(10) for k in range(7)]
        if batching == "class_wise":
            assert all(len({c for c, _ in b}) == 1 for b in batches)
        else:
            assert all(len({k for _, k in b}) == 1 for b in batches)


def test_cda_schedule_anneals_from_high_to_low():
    vals = [min_crop_scale("cda", t, 100, 0.08, 1.0, 1.0) for t in range(0, 101, 10)]
    assert vals[0] == pytest.approx(1.0) and vals[-1] == pytest.approx(0.08)
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert min_crop_scale("cda", 50, 100, 0.08, 1.0, 0.5) == pytest.approx(0.08)  # milestone reached
    assert min_crop_scale("fixed", 0, 100, 0.08, 1.0, 1.0) == 0.08


def test_strategy_parsing():
    assert parse_strategy("random") == ("random", None)
    assert parse_strategy("diff_signed-hard") == ("diff_signed", "hard")
    with pytest.raises(ConfigError):
        parse_strategy("entropy-easy")


def test_metric_selection_keeps_extremes():
    scores = {g: float(g % 7) for g in range(70)}
    easy = select_steps(list(range(70)), 10, "confidence-easy", 0, scores)
    hard = select_steps(list(range(70)), 10, "confidence-hard", 0, scores)
    assert len(easy) == len(hard) == 7
    assert all(scores[g] == 6 for g in easy) and all(scores[g] == 0 for g in hard)


def test_epoch_pool_sampler_replays_whole_epochs():
    pool = [g for g in range(40) if g // 4 in (1, 5, 8)]  # 4 steps per stored epoch, 3 epochs kept
    s = PoolSampler(pool, 4, epochs=6, seed=0, granularity="epoch")
    ids = list(s)
    assert len(ids) == len(s) == 24
    for e in range(6):
        chunk = ids[4 * e:4 * e + 4]
        assert len({g // 4 for g in chunk}) == 1 and chunk == sorted(chunk)
    b = list(PoolSampler(pool, 4, epochs=6, seed=0, granularity="batch"))
    assert len(b) == 24 and set(b) <= set(pool)
    assert list(PoolSampler(pool, 4, epochs=6, seed=0, granularity="batch")) == b  # seeded


@needs_fmnist
def test_every_recover_variant_runs(tiny_run):
    cfg, _ = tiny_run
    modes = ["c", "cs", "cda", "random_real", "rded"]
    cfg2 = dataclasses.replace(cfg, recover=dataclasses.replace(cfg.recover, modes=modes, crops="per_image"))
    lay = RunLayout(cfg.run_path)
    for m in modes:
        folder = recover(cfg2, m)
        data, meta = load_synthetic(folder, (0.286,), (0.353,))
        assert len(data) == 20 and torch.bincount(data.labels).tolist() == [2] * 10
        assert meta["source"] == {"random_real": "random_real", "rded": "rded"}.get(m, "synthesis")
        from labeldistill.models.checkpoint import load_teacher  # local: keeps the module's import block untouched

        teacher, info = load_teacher(lay.teacher_dir, torch.device("cpu"))
        x = (data.float_images() - info["mean"][0]) / info["std"][0]
        with torch.no_grad():  # the reported teacher top-1 is the teacher's accuracy on the saved images
            top1 = float((teacher(x).argmax(1) == data.labels).float().mean())
        assert meta["teacher_top1_on_images"] == pytest.approx(top1, abs=1e-6)
    real = json.loads((lay.images_dir("random_real") / "images.json").read_text())
    assert len(set(real["real_indices"])) == 20
    with pytest.raises(DataError, match="has only"):
        pick_real(load_split(cfg, "train"), 10**6, torch.Generator())


@needs_fmnist
def test_metric_pruning_and_topk_and_epoch_granularity(tiny_run):
    cfg, _ = tiny_run
    lay = RunLayout(cfg.run_path)
    full = LabelStore(lay.full_store("lpld"))
    labels = torch.arange(10).repeat_interleave(2)
    scores = {g: step_score(full.get(g), "confidence", labels, 10) for g in full.step_ids}
    easy = prune_store(full.path, lay.pruned_store("lpld", 3, "confidence-easy"), 3, "confidence-easy",
                       image_labels=labels)
    kept_scores = sorted((scores[g] for g in easy.step_ids), reverse=True)
    assert kept_scores == sorted(scores.values(), reverse=True)[:len(easy)]
    rec0 = full.get(full.step_ids[0])
    p0, y0 = torch.softmax(rec0.logits.float(), 1), labels[rec0.sample_idx]  # the same scores by hand
    two, own = p0.topk(2, 1).values, torch.nn.functional.one_hot(y0, 10).bool()
    hand = {"diff": (two[:, 0] - two[:, 1]).mean(), "correct": (p0.argmax(1) == y0).float().mean(),
            "diff_signed": (p0[own] - p0.masked_fill(own, -1.0).max(1).values).mean(), "cut_ratio": 1.0}
    for metric, want in hand.items():
        assert step_score(rec0, metric, labels, 10) == pytest.approx(float(want), abs=1e-6), metric
    top2 = prune_store(full.path, lay.pruned_store("lpld", 3, logits="top2"), 3, logits="top2")
    rec, dense = top2.get(top2.step_ids[0]), full.get(top2.step_ids[0])
    assert rec.logits.shape[1] == 2 and torch.equal(rec.topk_indices, dense.logits.float().topk(2).indices)
    p = rec.soft_targets(10, 4.0)
    assert torch.allclose(p.sum(1), torch.ones(len(p))) and int((p > 0).sum(1).max()) == 2
    ep = prune_store(full.path, lay.pruned_store("lpld", 3, granularity="epoch"), 3, granularity="epoch")
    assert len({g // full.manifest["steps_per_epoch"] for g in ep.step_ids}) == 2  # 6 epochs / 3
    assert len(ep) == 2 * full.manifest["steps_per_epoch"]
    row = validate(cfg, "lpld", 3, logits="top2")
    assert row["logits"] == "top2" and row["kept_steps"] == len(top2)
    assert validate(cfg, "lpld", 3, logits="top2", force=True)["top1"] == row["top1"]  # reproducible


@needs_fmnist
def test_generate_only_kept_equals_generate_then_prune(tiny_run):
    cfg, _ = tiny_run
    lay = RunLayout(cfg.run_path)
    pruned = prune_store(lay.full_store("sre2l"), lay.root / "cmp" / "x4", 4, "random", cfg.seed)
    cfg2 = dataclasses.replace(cfg, relabel=dataclasses.replace(cfg.relabel, only_kept=4.0))
    direct = relabel(cfg2, "sre2l")
    assert direct.path == lay.pruned_store("sre2l", 4)
    assert direct.step_ids == pruned.step_ids
    for g in direct.step_ids:
        a, b = direct.get(g), pruned.get(g)
        assert torch.equal(a.sample_idx, b.sample_idx) and torch.equal(a.boxes, b.boxes)
        assert torch.equal(a.flips, b.flips) and torch.equal(a.logits, b.logits)


@needs_fmnist
def test_store_info_components_add_up(tiny_run):
    cfg, _ = tiny_run
    lay = RunLayout(cfg.run_path)
    rep = store_report(lay.full_store("sre2l"))
    assert sum(rep["components"].values()) + rep["metadata"] == rep["total_on_disk"]
    assert rep["total_on_disk"] == sum(p.stat().st_size for p in lay.full_store("sre2l").iterdir())
    assert rep["images_bytes"] > 0 and rep["class_stats_bytes"] > 0
    assert rep["components"]["logits"] == rep["entries"] * 10 * 2
    assert rep["reference_layout_estimate"] == rep["entries"] * (20 + 16 + 1)


@needs_fmnist
def test_export_ddranking(tiny_run, tmp_path):
    cfg, _ = tiny_run
    from labeldistill.export import export_ddranking

    out = export_ddranking(cfg.run_path, "lpld", out=tmp_path / "dd")
    images, labels = torch.load(out / "images.pt"), torch.load(out / "labels.pt")
    meta = json.loads((out / "meta.json").read_text())
    assert images.shape == (20, 1, 28, 28) and labels.shape == (20, 10)
    assert meta["hard_labels"] == sorted(meta["hard_labels"])  # class-major
    assert labels.dtype == torch.float32 and not (labels >= 0).all()  # teacher logits, not probabilities
