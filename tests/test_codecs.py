"""Label codecs (``int8``, ``int4``, ``top<k>-int8``, ``top<k>-int4``): exact decoding, bytes, estimates, and the
soft targets a student sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_store import _records, _write

from labeldistill.errors import ConfigError, StoreError
from labeldistill.labels.accounting import format_report, store_report
from labeldistill.labels.codecs import Codec, pack4, unpack4
from labeldistill.labels.prune import prune_store
from labeldistill.labels.relabel import StepPlan, sample_step
from labeldistill.labels.store import LabelStore, LabelStoreWriter, StepRecord
from labeldistill.plan import estimate_store_bytes
from labeldistill.variants import parse_logits_codec, parse_logits_format

QUANTISED = ["int8", "int4", "top3-int8", "top3-int4"]
ALL_FORMATS = ["fp16", "top3", *QUANTISED]


@pytest.mark.parametrize("fmt, parsed", [("fp16", (None, "fp16")), ("int8", (None, "int8")), ("int4", (None, "int4")),
                                         ("top5", (5, "fp16")), ("top5-int8", (5, "int8")), ("top1-int4", (1, "int4"))])
def test_parse_logits_codec(fmt, parsed):
    assert parse_logits_codec(fmt) == parsed
    assert parse_logits_format(fmt) == parsed[0]


@pytest.mark.parametrize("fmt", ["fp32", "int2", "top0", "top5-fp16", "fp16-int8", "int8-int4", "top5-", "-int8"])
def test_unknown_logits_formats_are_refused(fmt):
    with pytest.raises(ConfigError, match="unknown logits format"):
        parse_logits_codec(fmt)


@pytest.mark.parametrize("cols", [1, 2, 7, 10])
def test_pack4_roundtrip(cols):
    q = torch.randint(0, 16, (9, cols), dtype=torch.uint8)
    p = pack4(q)
    assert p.shape == (9, (cols + 1) // 2) and p.dtype == torch.uint8
    assert torch.equal(unpack4(p, cols), q)
    assert int(p[0, 0]) == int(q[0, 0]) + (16 * int(q[0, 1]) if cols > 1 else 0)  # even column in the low nibble


def _reference(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.float32]:
    """Per-step affine quantisation written independently with numpy float32 (see labels/codecs.py)."""
    x = x.astype(np.float32)
    lo, hi = x.min(), x.max()
    scale = np.float32((hi - lo) / np.float32(levels))
    q = np.clip(np.rint((x - lo) / scale), 0, levels) if scale > 0 else np.zeros_like(x)
    return q.astype(np.float32) * scale + lo, scale


@settings(max_examples=20, deadline=None)
@given(n_steps=st.integers(1, 7), batch=st.integers(1, 17), classes=st.integers(3, 300), cutmix=st.booleans(),
       fmt=st.sampled_from(QUANTISED), spread=st.sampled_from([0.0, 1e-3, 1.0, 30.0]))
def test_decoding_equals_independent_dequantisation(tmp_path_factory, n_steps, batch, classes, cutmix, fmt, spread):
    """Write → read of a quantised store gives exactly the per-step dequantised values, within half a step."""
    path = tmp_path_factory.mktemp("q") / "store"
    recs = _records(n_steps, batch, 300, classes, 28, cutmix)
    for r in recs:
        r.logits = (r.logits.float() * spread).half()  # spread 0: a constant step (scale 0)
    store = _write(path, recs, 300, 28, cutmix, logits=fmt)
    codec = Codec.of(fmt, classes)
    levels = 2 ** (8 if codec.values == "int8" else 4) - 1
    for r in recs:
        src = r if codec.topk is None else r.to_topk(codec.topk)
        got = store.get(r.step_id)
        expected, scale = _reference(src.logits.float().numpy(), levels)
        assert got.logits.dtype == torch.float32 and got.logits.shape == src.logits.shape
        assert np.array_equal(got.logits.numpy(), expected)
        err = (got.logits - src.logits.float()).abs().amax(1)  # per row; float32 rounding of q·scale + offset aside
        ulps = 4 * np.finfo(np.float32).eps * float(src.logits.float().abs().max())
        assert bool((err <= scale / 2 + ulps).all()), (err.max(), scale)
        if codec.topk is not None:
            assert torch.equal(got.topk_indices, src.topk_indices)
        assert torch.equal(got.sample_idx, r.sample_idx) and torch.equal(got.boxes, r.boxes)
        assert torch.equal(got.flips, r.flips) and (got.mix is None) == (r.mix is None)


def test_tensor_names_dtypes_and_logits_bytes_at_10_classes(tmp_path):
    """At 10 classes the logits component (codes + per-step scale/offset) is ≤ 0.6 (int8) and ≤ 0.35 (int4) of
    fp16's; the bytes are the real shard tensors, and ``store info`` shows the scale component by itself."""
    recs = _records(30, 50, 500, 10, 28, cutmix=True, last_partial=False)
    stores = {f: _write(tmp_path / f, recs, 500, 28, True, per_shard=10, logits=f) for f in ALL_FORMATS}
    comp = {f: s.manifest["component_bytes"] for f, s in stores.items()}
    m, steps = 30 * 50, 30
    assert comp["fp16"]["logits"] == 2 * 10 * m
    assert comp["int8"]["logits"] == 10 * m and comp["int8"]["logits_scale"] == 8 * steps
    assert comp["int4"]["logits"] == 5 * m and comp["int4"]["logits_scale"] == 8 * steps
    assert comp["top3-int8"]["logits"] == 3 * m and comp["top3-int8"]["logits_index"] == 3 * m
    assert comp["top3-int4"]["logits"] == 2 * m
    ratio = {f: (c["logits"] + c.get("logits_scale", 0)) / comp["fp16"]["logits"] for f, c in comp.items()}
    assert ratio["int8"] <= 0.6 and ratio["int4"] <= 0.35
    h = stores["int4"]._open(0)
    assert h.get_slice("logits_q4").get_dtype() == "U8" and h.get_slice("logits_q4").get_shape() == [500, 5]
    assert h.get_slice("logits_scale").get_dtype() == "F32" and h.get_slice("logits_offset").get_shape() == [10]
    assert set(h.keys()).isdisjoint({"logits", "logits_q"})
    for s in stores.values():
        rep = store_report(s.path)
        assert rep["floor"] == sum(s.manifest["component_bytes"].values())
        assert rep["total_on_disk"] == sum(p.stat().st_size for p in s.path.iterdir())
    lines = format_report(store_report(stores["int8"].path))
    assert "logits int8" in lines and "logits_scale" in lines


def _relabel_like_store(path, fmt, n=37, c=12, hw=(20, 20), cutmix=True, steps_per_shard=7):
    """A store shaped exactly as relabel writes one (its own manifest fields), with random logits."""
    from labeldistill.config import RelabelConfig
    from labeldistill.data.registry import ImageSet
    from labeldistill.labels.relabel import store_meta

    relabel_cfg = RelabelConfig(epochs=5, batch_size=8, cutmix=1.0 if cutmix else 0.0, crop_scale=[0.08, 1.0],
                                flip=True)
    plan = StepPlan(n, relabel_cfg.batch_size, relabel_cfg.epochs, seed=0)
    names = [f"class_{i:04d}" for i in range(c)]
    images = ImageSet(torch.zeros(n, 3, *hw, dtype=torch.uint8), torch.arange(n) % c, names, (0.5,) * 3, (0.25,) * 3)
    info = {"fingerprint": "f" * 16, "mean": [0.4802, 0.4481, 0.3975], "std": [0.2302, 0.2265, 0.2262]}
    meta = {**store_meta(images, info, "e" * 16, relabel_cfg, 0, plan), "logits_format": fmt}
    writer = LabelStoreWriter(path, meta, steps_per_shard=steps_per_shard)
    g = torch.Generator().manual_seed(0)
    for sid in range(plan.total_steps):
        rec = sample_step(plan, sid, relabel_cfg, hw, hw)
        rec.logits = (4 * torch.randn(len(rec.sample_idx), c, generator=g)).half()
        writer.add(rec)
    return writer.close(), plan, names


@pytest.mark.parametrize("fmt", ALL_FORMATS + ["int4-odd"])
def test_estimate_predicts_every_codec(tmp_path, fmt):
    """plan.estimate_store_bytes predicts each codec's components exactly and its bytes on disk within 2 %, for a
    relabel-shaped store (several shards) and a pruned one (one shard)."""
    c = 11 if fmt == "int4-odd" else 12
    fmt = fmt.removesuffix("-odd")
    store, plan, names = _relabel_like_store(tmp_path / "full", fmt, c=c)
    est = estimate_store_bytes(list(range(plan.total_steps)), plan, c, (20, 20), True, fmt, 7, names)
    assert est["components"] == {k: store.manifest["component_bytes"].get(k, 0) for k in est["components"]}
    assert abs(est["total"] - store.bytes_on_disk()) <= 0.02 * store.bytes_on_disk()
    assert abs(est["total"] - store.bytes_on_disk()) < 200
    src, _, _ = _relabel_like_store(tmp_path / "src", "fp16", c=c)
    pruned = prune_store(src.path, tmp_path / "x4", 4, seed=0, logits=fmt)
    est4 = estimate_store_bytes(pruned.step_ids, plan, c, (20, 20), True, fmt, None, names)
    assert est4["components"] == {k: pruned.manifest["component_bytes"].get(k, 0) for k in est4["components"]}
    assert abs(est4["total"] - pruned.bytes_on_disk()) <= 0.02 * pruned.bytes_on_disk()


def test_prune_from_a_quantised_store_keeps_its_codes(tmp_path):
    """A full int8 store pruned to int8 re-quantises its decoded values to the same codes (no drift)."""
    store, _, _ = _relabel_like_store(tmp_path / "full", "int8")
    p = prune_store(store.path, tmp_path / "x4", 4, seed=0, logits="int8")
    for g in p.step_ids:
        a, b = store.get(g).logits, p.get(g).logits
        assert torch.allclose(a, b, rtol=0, atol=1e-5)
    fp = prune_store(store.path, tmp_path / "x4fp16", 4, seed=0, logits="fp16")
    g = fp.step_ids[0]
    assert torch.equal(fp.get(g).logits, store.get(g).logits.half())


def test_non_finite_logits_are_refused_by_quantised_codecs(tmp_path):
    recs = _records(2, 4, 50, 10, 28, False)
    recs[1].logits[0, 3] = float("inf")
    with pytest.raises(StoreError, match="non-finite"):
        _write(tmp_path / "s", recs, 50, 28, False, logits="int8")


def test_full_codec_refuses_top_k_records(tmp_path):
    recs = [r.to_topk(3) for r in _records(2, 4, 50, 10, 28, False)]
    with pytest.raises(StoreError, match="int8 logits from top-k records"):
        _write(tmp_path / "s", recs, 50, 28, False, logits="int8")


def _real_teacher_logits(steps: int = 40, batch: int = 50) -> torch.Tensor:
    """fp16 logits of a softmax-regression teacher (50 Adam steps on 2,000 real Fashion-MNIST test images, 80 %
    top-1) on 2,000 others: ``(steps, batch, 10)``. Median logit range: 15.5 in a row, 29.5 in a step of 50 — wider
    than the ConvNet teacher of ``bench/label_codecs.py`` (10.0 and 16.3), so the quantisation step is coarser here."""
    from labeldistill.data.idx import fashion_mnist

    data = fashion_mnist(None, "test")
    x = data.images[:4000].reshape(4000, -1).float() / 255
    y = data.labels[:4000]
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x[:2000]), y[:2000]).backward()
        opt.step()
    with torch.no_grad():
        return lin(x[2000:2000 + steps * batch]).half().reshape(steps, batch, 10)


# (max per row, mean over rows) of the total variation at T = 4; measured with this teacher: int8 0.0067 / 0.0030,
# int4 0.107 / 0.051 (per-step int4 is coarse: 15 levels over a step's ~30-logit range).
TV_BOUNDS = {"int8": (0.02, 0.005), "int4": (0.15, 0.07)}


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_soft_targets_at_temperature_4_stay_close_to_fp16(tmp_path, fmt):
    """What the student learns from, softmax(logits / 4), moves little under quantisation: total variation
    ½·Σ|p − p_fp16| per row ≤ the stated bound (real teacher logits), and always ≤ 1 − exp(−scale / T)."""
    from conftest import fmnist_available

    if not fmnist_available():
        pytest.skip("Fashion-MNIST not installed (make data)")
    logits = _real_teacher_logits()
    recs = _records(len(logits), logits.shape[1], 300, 10, 28, False, last_partial=False)
    for r, lg in zip(recs, logits):
        r.logits = lg
    fp16 = _write(tmp_path / "fp16", recs, 300, 28, False, per_shard=16)
    q = _write(tmp_path / fmt, recs, 300, 28, False, per_shard=16, logits=fmt)
    T = 4.0
    tvs = []
    for r in recs:
        p = fp16.get(r.step_id).soft_targets(10, T)
        rq = q.get(r.step_id)
        tv = 0.5 * (rq.soft_targets(10, T) - p).abs().sum(1)
        lg = r.logits.float()
        scale = float(lg.max() - lg.min()) / (255 if fmt == "int8" else 15)
        assert bool((tv <= 1 - np.exp(-scale / T) + 1e-6).all())
        tvs.append(tv)
    tv = torch.cat(tvs)
    max_bound, mean_bound = TV_BOUNDS[fmt]
    assert float(tv.max()) <= max_bound and float(tv.mean()) <= mean_bound, (float(tv.max()), float(tv.mean()))


def test_step_record_from_a_quantised_store_converts_to_top_k(tmp_path):
    recs = _records(3, 6, 50, 10, 28, False)
    store = _write(tmp_path / "s", recs, 50, 28, False, logits="int8")
    r = store.get(recs[0].step_id)
    assert isinstance(r, StepRecord) and r.to_topk(2).logits.shape == (len(r.sample_idx), 2)


def test_a_store_in_an_unknown_format_is_a_store_error(tmp_path):
    import json

    store = _write(tmp_path / "s", _records(2, 4, 50, 10, 28, False), 50, 28, False, logits="int8")
    mf = store.path / "manifest.json"
    m = json.loads(mf.read_text())
    m["logits_format"] = "int3"
    mf.write_text(json.dumps(m))
    with pytest.raises(StoreError, match="'int3', a format this labeldistill cannot read"):
        LabelStore(store.path)
