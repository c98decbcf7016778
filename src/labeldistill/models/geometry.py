"""Settings that quietly break on small inputs (8×8 digits and the like), found before any training.

The checks are on the image side length ``S`` in pixels (the smaller of height and width):

* a ``convnet`` of depth ``d`` halves the map ``d`` times (DC ConvNet, Zhao et al. ICLR 2021: conv → norm →
  ReLU → 2×2 average pool per block), leaving ``⌊S / 2^d⌋`` px; below 2 px the classifier sees one averaged
  pixel per channel and the spatial layout of the digit is gone;
* the teacher's padded random crop (``squeeze.crop_padding`` ``p``, SRe2L's squeeze augmentation) and
  recover's random roll (``recover.jitter``, SRe2L's recover) shift the image by up to ``p`` px: more than 1/8
  of the side (CIFAR's standard 4 px padding on 32 px is exactly 1/8) moves the object out of the frame.

On scikit-learn's 8 × 8 digits all of them fire with the Fashion-MNIST demo's settings (depth 3 → 1 px; padding 2 =
25 % of the side); BENCHMARKS.md section ``digits`` measures what they cost.
"""

from __future__ import annotations

import inspect

from ..config import ModelConfig
from ..variants import needs_class_stats
from .convnet import convnet

MIN_FEATURE_PX = 2  # smallest last feature map a convnet should keep
MAX_PADDING_FRACTION = 1 / 8  # largest squeeze.crop_padding as a fraction of the image side


def convnet_depth(spec: ModelConfig) -> int | None:
    """Depth of a ``convnet`` spec (its builder's default when ``args`` has none); ``None`` for other models."""
    if spec.name != "convnet":
        return None
    return int(spec.args.get("depth", inspect.signature(convnet).parameters["depth"].default))


def pooling_warning(spec: ModelConfig, side: int, key: str) -> str | None:
    """One line when a ``convnet``'s pooling leaves a last feature map under ``MIN_FEATURE_PX`` px, else ``None``.

    Args:
        spec: the model spec (any model; only ``convnet`` is checked).
        side: image side length in px.
        key: the config key of ``spec`` (``squeeze.model``), named in the message.
    """
    depth = convnet_depth(spec)
    if depth is None or side // 2 ** depth >= MIN_FEATURE_PX:
        return None
    fit = max(0, (side // MIN_FEATURE_PX).bit_length() - 1)  # largest depth with side // 2**depth >= 2
    return (f"{key}: convnet depth {depth} pools {side} px inputs to {side // 2 ** depth} px; set "
            f"{key}.args.depth: {fit} (or less) so the last feature map keeps >= {MIN_FEATURE_PX} px")


def small_input_warnings(cfg, shape: tuple[int, ...]) -> list[str]:
    """Warnings for settings too coarse for images of ``shape`` ``(C, H, W)``: convnet pooling of the teacher
    (``squeeze.model``) and every student (``validate.students``, else ``validate.model``), the teacher's crop padding, and recover's jitter
    (when some mode optimises images).

    Args:
        cfg: a :class:`labeldistill.config.Config`.
        shape: the input shape ``(C, H, W)`` (only ``H`` and ``W`` are read).

    Returns:
        One line per problem, each naming the setting to change; empty when nothing is wrong.
    """
    side = min(int(shape[-2]), int(shape[-1]))
    students = ([(s, f"validate.students[{i}]") for i, s in enumerate(cfg.validate.students)]
                or [(cfg.validate.model, "validate.model")])
    out = [w for w in (pooling_warning(m, side, key) for m, key in [(cfg.squeeze.model, "squeeze.model"), *students])
           if w]
    sc = cfg.squeeze
    fit = int(side * MAX_PADDING_FRACTION)
    if sc.checkpoint is None and sc.crop_scale is None and sc.crop_padding > side * MAX_PADDING_FRACTION:
        out.append(_shift_warning("squeeze.crop_padding", sc.crop_padding, side, fit))
    if needs_class_stats(cfg.recover.modes, cfg.recover.variants) and cfg.recover.jitter > side * MAX_PADDING_FRACTION:
        out.append(_shift_warning("recover.jitter", cfg.recover.jitter, side, fit))
    return out


def _shift_warning(key: str, px: int, side: int, fit: int) -> str:
    return (f"{key}: {px} px shifts {side} px images by up to {100 * px / side:.0f} % of their side; "
            f"set {key}: {fit} (at most 1/8 of the side)")
