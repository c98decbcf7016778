import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labeldistill.augment import (apply_crops_flips, apply_cutmix, pack_bits, sample_cutmix,
                                  sample_resized_crops, step_generator, unpack_bits)


def test_step_generator_is_deterministic_and_key_sensitive():
    a = torch.rand(5, generator=step_generator(0, 3, 4))
    assert torch.equal(a, torch.rand(5, generator=step_generator(0, 3, 4)))
    assert not torch.equal(a, torch.rand(5, generator=step_generator(0, 4, 3)))
    assert not torch.equal(a, torch.rand(5, generator=step_generator(1, 3, 4)))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(4, 64), w=st.integers(4, 64), lo=st.floats(0.05, 1.0), seed=st.integers(0, 10**6))
def test_crop_boxes_stay_inside_the_image(h, w, lo, seed):
    b = sample_resized_crops(step_generator(seed), 64, h, w, (lo, 1.0))
    assert (b[:, 2] >= 1).all() and (b[:, 3] >= 1).all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 0] + b[:, 2] <= w).all() and (b[:, 1] + b[:, 3] <= h).all()


def test_full_box_without_flip_is_identity_and_flip_mirrors():
    x = torch.rand(3, 1, 12, 12)
    full = torch.tensor([[0, 0, 12, 12]] * 3)
    assert torch.allclose(apply_crops_flips(x, full, None, (12, 12)), x, atol=1e-5)
    flips = torch.tensor([True, False, True])
    y = apply_crops_flips(x, full, flips, (12, 12))
    assert torch.allclose(y[0], x[0].flip(-1), atol=1e-5) and torch.allclose(y[1], x[1], atol=1e-5)


def test_crop_box_selects_the_region():
    x = torch.zeros(1, 1, 10, 10)
    x[..., 2:6, 3:7] = 1.0  # rows 2..5, cols 3..6
    y = apply_crops_flips(x, torch.tensor([[3, 2, 4, 4]]), None, (4, 4))
    assert torch.allclose(y, torch.ones_like(y), atol=1e-5)


@given(n=st.integers(0, 100), seed=st.integers(0, 1000))
def test_bit_packing_roundtrip(n, seed):
    bits = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5
    packed = pack_bits(bits)
    assert packed.numel() == (n + 7) // 8
    assert torch.equal(unpack_bits(packed, n), bits)


def test_cutmix_pastes_the_box_from_the_partner():
    g = step_generator(5)
    mix = sample_cutmix(g, 4, 16, 16)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 16, 16).contiguous()
    y = apply_cutmix(x, mix)
    x0, y0, w, h = mix.box
    for i in range(4):
        assert (y[i, :, y0:y0 + h, x0:x0 + w] == float(mix.perm[i])).all()
        outside = y[i].clone()
        outside[:, y0:y0 + h, x0:x0 + w] = float(i)
        assert (outside == float(i)).all()
