import math
import torch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labeldistill.augment import MixParams
from labeldistill.errors import ConfigError, StoreError
from labeldistill.labels.pool import num_kept, recipe_mismatch, select_steps
from labeldistill.labels.prune import check_pruned_store, prune_store
from labeldistill.labels.store import LabelStore, LabelStoreWriter, StepRecord
from labeldistill.layout import LabelVariant


def _records(n_steps, batch, n_images, classes, hw, cutmix, seed=0, last_partial=True):
    g = torch.Generator().manual_seed(seed)
    recs = []
    for s in range(n_steps):
        b = batch - (batch // 2 if last_partial and s == n_steps - 1 else 0)
        w = torch.randint(1, hw + 1, (b,), generator=g)
        h = torch.randint(1, hw + 1, (b,), generator=g)
        x0 = (torch.rand(b, generator=g) * (hw - w + 1)).long()
        y0 = (torch.rand(b, generator=g) * (hw - h + 1)).long()
        mix = None
        if cutmix and s % 2 == 0:
            mix = MixParams(torch.randperm(b, generator=g), 0.25, (1, 2, 3, 4))
        recs.append(StepRecord(
            step_id=3 * s + 1,
            sample_idx=torch.randint(0, n_images, (b,), generator=g),
            boxes=torch.stack([x0, y0, w, h], 1),
            flips=torch.rand(b, generator=g) < 0.5,
            mix=mix,
            logits=torch.randn(b, classes, generator=g).half(),
        ))
    return recs


def _write(path, recs, n_images, hw, cutmix, per_shard=3, logits="fp16"):
    meta = {"num_images": n_images, "image_hw": [hw, hw], "input_size": [hw, hw], "cutmix": cutmix,
            "num_classes": recs[0].logits.shape[1], "logits_format": logits,
            "epochs": 1, "batch_size": 8, "steps_per_epoch": len(recs), "prune": {"factor": 1.0, "strategy": "none"},
            "image_fingerprint": "img", "teacher_fingerprint": "tea",
            "normalization": {"mean": [0.0], "std": [1.0]}}
    w = LabelStoreWriter(path, meta, steps_per_shard=per_shard)
    w.extend(recs)
    return w.close()


def _assert_same(a: StepRecord, b: StepRecord):
    assert a.step_id == b.step_id
    assert torch.equal(a.sample_idx, b.sample_idx)
    assert torch.equal(a.boxes, b.boxes)
    assert torch.equal(a.flips, b.flips)
    assert torch.equal(a.logits, b.logits)
    assert (a.mix is None) == (b.mix is None)
    if a.mix is not None:
        assert torch.equal(a.mix.perm, b.mix.perm) and a.mix.box == b.mix.box
        assert abs(a.mix.lam - b.mix.lam) < 1e-3


@settings(max_examples=15, deadline=None)
@given(n_steps=st.integers(1, 9), batch=st.integers(2, 19), classes=st.integers(3, 300),
       n_images=st.sampled_from([50, 300, 40000]), hw=st.sampled_from([8, 28, 300]), cutmix=st.booleans(),
       logits=st.sampled_from(["fp16", "top1", "top3"]))
def test_store_roundtrip_is_exact(tmp_path_factory, n_steps, batch, classes, n_images, hw, cutmix, logits):
    """Write → read is exact for every index width (uint8/int16/int32), crop width, CutMix and label format."""
    path = tmp_path_factory.mktemp("s") / "store"
    recs = _records(n_steps, batch, n_images, classes, hw, cutmix)
    store = _write(path, recs, n_images, hw, cutmix, logits=logits)
    assert store.step_ids == sorted(r.step_id for r in recs)
    k = None if logits == "fp16" else int(logits[3:])
    for r in recs:
        expected = r if k is None else r.to_topk(k)
        got = store.get(r.step_id)
        _assert_same(expected, got)
        if k is not None:
            assert torch.equal(expected.topk_indices, got.topk_indices)
    reopened = LabelStore(path, verify=True)
    last = recs[-1] if k is None else recs[-1].to_topk(k)
    _assert_same(last, reopened.get(recs[-1].step_id))


def test_component_bytes_and_disk_bytes(tmp_path):
    recs = _records(10, 16, 100, 10, 28, cutmix=False)
    store = _write(tmp_path / "s", recs, 100, 28, False)
    comp = store.manifest["component_bytes"]
    entries = sum(len(r.sample_idx) for r in recs)
    assert comp["logits"] == entries * 10 * 2  # fp16
    assert comp["crop"] == entries * 4  # uint8 boxes for 28-px images
    assert comp["flip"] == sum((m + 7) // 8 for m in (16 * 3, 16 * 3, 16 * 3, 8))  # packed bits per shard
    on_disk = sum(p.stat().st_size for p in (tmp_path / "s").iterdir())
    assert store.bytes_on_disk() == on_disk
    assert sum(comp.values()) < on_disk  # headers + manifest come on top


def test_truncated_shard_is_detected(tmp_path):
    _write(tmp_path / "s", _records(4, 8, 100, 10, 28, False), 100, 28, False)
    shard = tmp_path / "s" / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(StoreError, match="truncated or altered"):
        LabelStore(tmp_path / "s")


def test_altered_shard_fails_verification(tmp_path):
    _write(tmp_path / "s", _records(4, 8, 100, 10, 28, False), 100, 28, False)
    shard = tmp_path / "s" / "shard_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    LabelStore(tmp_path / "s")  # sizes still match: the cheap check passes
    with pytest.raises(StoreError, match="SHA-256"):
        LabelStore(tmp_path / "s", verify=True)


@pytest.mark.parametrize("total, factor, kept", [(600, 1, 600), (600, 10, 60), (600, 40, 15), (600, 30, 20),
                                                 (7, 40, 1), (1000, 2.5, 400), (601, 100, 6)])
def test_num_kept_subset_rounds(total, factor, kept):
    assert num_kept(total, factor, "subset") == kept


# prefix: the reference's truncation ⌊(1 - r) * total⌋ = ⌊total / f⌋, computed exactly (300 / 40: 7 where rounding
# gives 8; the reference's float expression would give 59 of 600 at 10x)
@pytest.mark.parametrize("total, factor, kept", [(600, 1, 600), (600, 10, 60), (600, 40, 15), (600, 30, 20),
                                                 (300, 40, 7), (7, 40, 1), (1000, 2.5, 400), (601, 100, 6),
                                                 (15700, 10, 1570), (18, 3, 6), (6, 3, 2)])
def test_num_kept_prefix_truncates(total, factor, kept):
    assert num_kept(total, factor) == num_kept(total, factor, "prefix") == kept


@settings(max_examples=40, deadline=None)
@given(total=st.integers(1, 3000), f1=st.floats(1, 200), f2=st.floats(1, 200), seed=st.integers(0, 99),
       pool=st.sampled_from(["prefix", "subset"]))
def test_pruning_keeps_exact_count_and_nests(total, f1, f2, seed, pool):
    ids = list(range(total))
    small, large = sorted((f1, f2))
    a = select_steps(ids, small, "random", seed, pool=pool)
    b = select_steps(ids, large, "random", seed, pool=pool)
    if pool == "subset":
        assert len(a) == max(1, round(total / small)) and len(b) == max(1, round(total / large))
    else:
        assert len(a) == max(1, math.floor(total / small + 1e-9)) and a == ids[:len(a)]
        assert len(b) == max(1, math.floor(total / large + 1e-9)) and b == ids[:len(b)]
    assert set(b) <= set(a)


def test_prune_store_writes_a_real_smaller_store(tmp_path):
    recs = _records(40, 16, 100, 10, 28, cutmix=True, last_partial=False)
    full = _write(tmp_path / "full", recs, 100, 28, True, per_shard=10)
    p = prune_store(tmp_path / "full", tmp_path / "x10", 10, "random", seed=0)
    assert len(p) == 4  # prefix pool: ⌊40 / 10⌋ (the reference's float expression would keep 3)
    assert p.step_ids == full.step_ids[:4] and p.manifest["prune"]["pool"] == "prefix"
    for g in p.step_ids:
        _assert_same(full.get(g), p.get(g))
    assert p.manifest["prune"]["factor"] == 10.0
    assert full.bytes_on_disk() / p.bytes_on_disk() > 6
    with pytest.raises(StoreError, match="already pruned"):
        prune_store(tmp_path / "x10", tmp_path / "x100", 10)
    with pytest.raises(ConfigError):
        prune_store(tmp_path / "full", tmp_path / "bad", 0.5)
    assert not (tmp_path / "bad").exists()


def test_subset_store_records_its_pool_and_is_never_reused_as_prefix(tmp_path):
    """Catches: the pool missing from the manifest, a subset store (or one written before pools existed, which
    records none) silently reused where the prefix pool is asked for."""
    recs = _records(40, 16, 100, 10, 28, cutmix=False, last_partial=False)
    full = _write(tmp_path / "full", recs, 100, 28, False, per_shard=10)
    sub = prune_store(tmp_path / "full", tmp_path / "x10-subset", 10, "random", seed=0, pool="subset")
    assert sub.manifest["prune"]["pool"] == "subset" and len(sub) == 4  # round(40 / 10)
    assert sub.step_ids == select_steps(full.step_ids, 10, seed=0, pool="subset") != full.step_ids[:4]
    check_pruned_store(sub.path, LabelVariant(10.0, pool="subset"))
    with pytest.raises(StoreError, match="prune.pool 'subset', not 'prefix'"):
        check_pruned_store(sub.path, LabelVariant(10.0))
    legacy = {"factor": 10.0, "strategy": "random", "granularity": "batch", "seed": 0}  # no pool recorded
    assert recipe_mismatch(legacy, LabelVariant(10.0)) == "prune.pool 'subset', not 'prefix'"
    assert recipe_mismatch(legacy, LabelVariant(10.0, pool="subset")) is None
    assert recipe_mismatch({"factor": 1.0, "strategy": "none"}, LabelVariant(1.0)) is None  # 1x keeps all
