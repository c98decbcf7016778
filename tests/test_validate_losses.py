"""validate.loss: kl (default, unchanged), soft_ce and a GIFT-style cosine loss (issue #15 item 4)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from labeldistill import cli
from labeldistill.config import load_config
from labeldistill.errors import ConfigError
from labeldistill.validate import gift_loss, kd_loss, soft_ce_loss, student_loss

from conftest import REPO, needs_fmnist

DEMO = str(REPO / "configs" / "fmnist_demo.yaml")
S = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
P = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
Y = torch.tensor([0, 2])


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def _vc(**kw) -> SimpleNamespace:
    base = {"loss": "kl", "temperature": 2.0, "t2_scale": True, "gift_alpha": 0.5, "gift_smoothing": 0.1}
    return SimpleNamespace(**{**base, **kw})


def test_kl_by_hand_and_the_default_is_kd_loss_unchanged():
    t = 2.0
    want = sum(sum(p * math.log(p / q) for p, q in zip(pr, _softmax(sr, t)) if p > 0)
               for pr, sr in zip(P.tolist(), S.tolist())) / 2 * t * t
    assert kd_loss(S, P, t).item() == pytest.approx(want, rel=1e-5)
    assert torch.equal(student_loss(_vc(), S, P), kd_loss(S, P, 2.0, True))
    assert torch.equal(student_loss(_vc(t2_scale=False), S, P), kd_loss(S, P, 2.0, False))
    assert load_config(DEMO).validate.loss == "kl"


def test_soft_ce_by_hand_differs_from_kl_by_the_teacher_entropy():
    t = 2.0
    want = -sum(sum(p * math.log(q) for p, q in zip(pr, _softmax(sr, t)))
                for pr, sr in zip(P.tolist(), S.tolist())) / 2
    assert soft_ce_loss(S, P, t, t2_scale=False).item() == pytest.approx(want, rel=1e-5)
    assert student_loss(_vc(loss="soft_ce"), S, P).item() == pytest.approx(want * t * t, rel=1e-5)
    entropy = -sum(p * math.log(p) for pr in P.tolist() for p in pr if p > 0) / 2
    assert (soft_ce_loss(S, P, t) - kd_loss(S, P, t)).item() == pytest.approx(entropy * t * t, rel=1e-5)


def test_gift_by_hand():
    t, a, eps = 2.0, 0.3, 0.1
    total = 0.0
    for sr, pr, y in zip(S.tolist(), P.tolist(), Y.tolist()):
        h = [(1 - eps) * (k == y) + eps / 3 for k in range(3)]
        q = [a * p + (1 - a) * hk for p, hk in zip(pr, h)]
        s = _softmax(sr, t)
        cos = sum(x * z for x, z in zip(s, q)) / math.sqrt(sum(x * x for x in s) * sum(z * z for z in q))
        total += 1 - cos
    assert gift_loss(S, P, Y, t, a, eps).item() == pytest.approx(total / 2, rel=1e-5)
    got = student_loss(_vc(loss="gift", gift_alpha=a, gift_smoothing=eps), S, P, Y)
    assert got.item() == pytest.approx(total / 2, rel=1e-5)


@pytest.mark.parametrize("bad, key", [("validate.loss=mse", "validate.loss"),
                                      ("validate.gift_alpha=1.5", "validate.gift_alpha"),
                                      ("validate.gift_smoothing=-0.1", "validate.gift_smoothing")])
def test_config_refuses_bad_loss_settings(bad, key):
    with pytest.raises(ConfigError, match=key):
        load_config(DEMO, [bad])


@needs_fmnist
def test_validate_with_gift_end_to_end_records_the_loss(tmp_path):
    from test_provenance import MICRO

    run_dir = tmp_path / "r"
    args = ["run", DEMO, *MICRO, "prune.factors=[1]", f"run_dir={run_dir}", "validate.loss=gift"]
    assert cli.main(args) == 0
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert rows and all(r["loss"] == "gift" and r["gift_alpha"] == 0.5 and 0 <= r["top1"] <= 1 for r in rows)
    ledger = json.loads((run_dir / "stages.json").read_text())
    key = next(k for k in ledger if k.startswith("validate["))
    assert ledger[key]["settings"]["validate.loss"] == "gift"
    # the kl default leaves the loss keys out of the fingerprint (older results stay valid)
    from labeldistill.provenance import validate_settings
    assert "validate.loss" not in validate_settings(load_config(DEMO))


def test_gift_gradient_is_a_small_fraction_of_kl_at_high_temperature():
    """The scale the gift_loss docstring states: |∇ gift| / |∇ kl (T²)| on random logits (B 50, K 10) is below
    1/50 at T = 20 and grows as T falls (below 1/10 at 4, above 1/20 at 1)."""
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(50, 10, generator=g) * 5, torch.randn(50, 10, generator=g) * 2
    y = teacher.argmax(1)

    def ratio(t: float) -> float:
        p = torch.softmax(teacher / t, 1)
        s = student.clone().requires_grad_()
        grads = [torch.autograd.grad(f(s), s)[0].norm() for f in (lambda s: gift_loss(s, p, y, t),
                                                                   lambda s: kd_loss(s, p, t))]
        return (grads[0] / grads[1]).item()

    r20, r4, r1 = ratio(20.0), ratio(4.0), ratio(1.0)
    assert r20 < 1 / 50 and r4 < 1 / 10 and r1 > 1 / 20 and r20 < r4 < r1
