"""The pruned label pool (issue #13): the reference's prefix pool, the old random subset, ordered replay, tags,
the dry run's selection and the reference presets. No teacher needed; the stage-level checks (only_kept, EMA
class statistics) are in test_core_maths.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labeldistill.augment import Stream, step_generator
from labeldistill.config import load_config
from labeldistill.errors import ConfigError
from labeldistill.labels.pool import kept_steps, num_kept, recipe_mismatch, select_epochs, select_steps
from labeldistill.labels.relabel import StepPlan
from labeldistill.layout import LabelVariant, RunLayout
from labeldistill.plan.stages import label_rows
from labeldistill.validate import PoolSampler
from labeldistill.variants import label_variants

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "fmnist_demo.yaml"
# The reference's command-line prune ratios and the factors they stand for (spec §6.1).
REFERENCE_RATIOS = {10: 0.9, 20: 0.95, 40: 0.975, 50: 0.98, 100: 0.99}


def _views(plan: StepPlan, kept: list[int]) -> torch.Tensor:
    counts = torch.zeros(plan.n, dtype=torch.long)
    for g in kept:
        counts[plan.sample_idx(g)] += 1
    return counts


@pytest.mark.parametrize("total", [1, 7, 64, 157, 600, 1570, 15700, 117300])
def test_prefix_keeps_the_first_int_one_minus_r_times_s_steps_like_the_reference(total):
    """Catches: rounding instead of truncation, a random subset instead of the first steps, an input order taken
    for the generation order. The count is the reference's ⌊(1 − r)·S⌋ computed exactly: its float expression
    keeps one fewer where (1 − r)·S lands just below an integer (a documented departure)."""
    ids = list(range(total))
    shuffled = [ids[i] for i in torch.randperm(total, generator=torch.Generator().manual_seed(1)).tolist()]
    for f, r in REFERENCE_RATIOS.items():
        exact = max(1, int((1 - r) * total + 1e-9))  # the reference: pool[:int((1-args.prune_ratio)*total_steps)]
        k = max(1, total // f)
        assert exact == k and k <= max(1, round(total / f))
        assert num_kept(total, f) == k
        assert select_steps(ids, f, seed=3) == select_steps(shuffled, f, seed=4) == ids[:k]


def test_prefix_from_a_100_epoch_plan_keeps_every_image_in_floor_kept_over_spe_views():
    """At 100x (and 40x, 20x) from a 100-epoch plan every image keeps >= floor(kept / steps_per_epoch) views;
    the old random subset leaves some image without any view at 100x, so the check can tell them apart."""
    plan = StepPlan(num_images=250, batch_size=16, epochs=100, seed=0)  # 16 steps per epoch, last one partial
    steps = list(range(plan.total_steps))
    for f in (100, 40, 20):
        kept = select_steps(steps, f, seed=0)
        assert len(kept) == plan.total_steps // f
        assert int(_views(plan, kept).min()) >= len(kept) // plan.steps_per_epoch >= 1
    subset = select_steps(steps, 100, seed=0, pool="subset")
    assert len(subset) == 16 and int(_views(plan, subset).min()) == 0


def test_epoch_granularity_keeps_the_first_whole_epochs_within_the_step_budget():
    """Catches: partial epochs under granularity epoch, a random choice of epochs under prefix, more steps than
    the batch granularity's budget, zero epochs at a large factor."""
    spe, epochs = 16, 100
    steps = list(range(spe * epochs))
    for f, want in ((40, 2), (10, 10), (3, 33), (1000, 1)):  # ⌊100 / f⌋ epochs (the reference's float: 9 at 10x)
        v = LabelVariant(float(f), granularity="epoch")
        kept = kept_steps(steps, v, 0, spe, epochs)
        assert select_epochs(epochs, f) == list(range(want))
        assert kept == list(range(want * spe))
        assert len(kept) <= max(spe, num_kept(len(steps), f))


def test_subset_pool_is_the_old_seeded_random_selection():
    """``subset`` must keep exactly what the code before the prefix pool kept (round, seeded permutation)."""
    ids = list(range(0, 3000, 3))
    for seed in (0, 5):
        for f in (2.5, 10, 40, 100):
            k = max(1, min(len(ids), round(len(ids) / f)))
            order = torch.randperm(len(ids), generator=step_generator(seed, Stream.PRUNE))
            assert select_steps(ids, f, "random", seed, pool="subset") == sorted(ids[i] for i in order[:k].tolist())
            e_order = torch.randperm(300, generator=step_generator(seed, Stream.PRUNE, 1))
            assert select_epochs(300, f, seed, pool="subset") == sorted(e_order[:round(300 / f)].tolist())


def test_metric_strategies_rank_all_steps_and_take_the_count_from_the_pool():
    scores = {g: float((g * 7) % 11) for g in range(600)}
    for pool, k in (("prefix", 60), ("subset", 60)):
        easy = select_steps(list(range(600)), 10, "confidence-easy", 0, scores, pool=pool)
        assert len(easy) == k and min(scores[g] for g in easy) >= max(scores[g] for g in range(600) if g not in easy)


def test_ordered_replay_yields_stored_epoch_e_in_training_epoch_e():
    """Catches: ordered replay drawing at random, stored order lost, epochs not cycled over the kept ones."""
    spe, epochs = 5, 4
    full = list(range(spe * epochs))
    s = PoolSampler(full, spe, epochs, seed=0, replay="ordered")
    assert list(s) == full and len(s) == len(full)  # training epoch e = stored epoch e, in stored order
    assert PoolSampler(full, spe, epochs, seed=0, granularity="epoch", replay="ordered").__iter__().__next__() == 0
    pruned = full[:12]  # a prefix: stored epochs 0, 1 and the first 2 steps of epoch 2
    got = list(PoolSampler(pruned, spe, 5, seed=0, replay="ordered"))
    assert got == pruned + pruned[:10]  # training epochs 3, 4 replay kept stored epochs 0, 1
    drawn = list(PoolSampler(full, spe, epochs, seed=0, replay="pool"))
    assert len(drawn) == len(full) and drawn != full  # the pool replay draws with replacement


def test_replay_defaults_and_tags():
    """Default tags stay the old ones; non-default pools and replays name their stores / results."""
    assert LabelVariant.default_replay(1) == "ordered" and LabelVariant.default_replay(40) == "pool"
    assert [LabelVariant(40.0).tag, LabelVariant(1.0).result_tag] == ["x40", "x1"]
    assert LabelVariant(40.0, pool="subset").tag == "x40-subset"
    assert LabelVariant(40.0, granularity="epoch", pool="subset").tag == "x40-epoch-subset"
    assert LabelVariant(40.0, replay="ordered").tag == "x40"  # replay does not change the store
    assert LabelVariant(40.0, replay="ordered").result_tag == "x40-replay_ordered"
    assert LabelVariant(1.0, replay="pool").result_tag == "x1-replay_pool"
    lay = RunLayout(Path("r"))
    assert lay.validate_file("m", LabelVariant(40.0, replay="ordered"), student="s").name == "m_x40-replay_ordered.json"
    cfg = load_config(DEMO, ["prune.factors=[1, 40]", "prune.pool=subset"])
    assert [(v.tag, v.replay_mode) for v in label_variants(cfg)] == [("x1", "ordered"), ("x40-subset", "pool")]
    cfg = load_config(DEMO, ["prune.factors=[1, 40]", "prune.replay=ordered"])
    assert [v.result_tag for v in label_variants(cfg)] == ["x1", "x40-replay_ordered"]
    for bad in ("prune.pool=first", "prune.replay=random", "class_stats.mode=running"):
        with pytest.raises(ConfigError):
            load_config(DEMO, [bad])


def test_dry_run_label_rows_use_the_pool_selection():
    """The dry run's kept steps are the pool's (at 80x of 600: 7 under prefix, 8 under subset)."""
    plan = StepPlan(num_images=100, batch_size=10, epochs=60, seed=0)  # 600 steps
    for pool, k in (("prefix", 7), ("subset", 8)):
        cfg = load_config(DEMO, ["prune.factors=[1, 80]", f"prune.pool={pool}", "relabel.epochs=60",
                                 "relabel.batch_size=10"])
        rows = {r["tag"]: r for r in label_rows(cfg, plan, 10, (28, 28), [str(i) for i in range(10)])}
        tag = "x80" if pool == "prefix" else "x80-subset"
        assert rows[tag]["kept_steps"] == k and rows[tag]["pool"] == pool and rows["x1"]["kept_steps"] == 600
        only = load_config(DEMO, ["relabel.only_kept=80", f"prune.pool={pool}", "relabel.epochs=60",
                                  "relabel.batch_size=10"])
        assert [r["kept_steps"] for r in label_rows(only, plan, 10, (28, 28), [str(i) for i in range(10)])] == [k]


@pytest.mark.parametrize("name", ["tiny_imagenet_lpld.yaml", "imagenet1k_lpld.yaml"])
def test_reference_presets_use_the_reference_pool_and_ema_class_stats(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.class_stats.mode == "ema" and cfg.prune.pool == "prefix" and cfg.prune.replay is None


def test_results_and_stores_made_before_pools_are_not_taken_for_the_new_defaults():
    """A validate row or store manifest that records no pool / replay used ``subset`` / ``pool``: the new
    defaults (prefix; ordered at 1x) must see the difference instead of reusing it."""
    old_row = {"prune_factor": 1.0, "top1": 0.5}
    assert recipe_mismatch(old_row, LabelVariant(1.0), with_replay=True) == "prune.replay 'pool', not 'ordered'"
    assert recipe_mismatch(old_row, LabelVariant(1.0, replay="pool"), with_replay=True) is None
    row = {"pool": "prefix", "replay": "pool"}
    assert recipe_mismatch(row, LabelVariant(40.0), with_replay=True) is None
    assert "prune.pool 'prefix', not 'subset'" in recipe_mismatch(row, LabelVariant(40.0, pool="subset"))
