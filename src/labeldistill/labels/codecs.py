"""Logits codecs of the label store: how the teacher logits of a shard's steps become tensors, and back.

A logits format (``relabel.logits`` / ``prune.logits``, parsed by
:func:`labeldistill.variants.parse_logits_codec`) chooses which logits an entry keeps (all ``C``, or the ``k``
largest with their class indices) and how their values are encoded. Shard tensors, for a shard of ``s`` steps
and ``m`` entries (``n = C``, or ``k`` in a top-k format):

=================  ==================================================  =====================================
format             tensors                                             bytes
=================  ==================================================  =====================================
``fp16``           ``logits`` (m, C) float16                           2·C per entry
``int8``           ``logits_q`` (m, C) uint8                           C per entry, + 8 per step
``int4``           ``logits_q4`` (m, ⌈C/2⌉) uint8                      ⌈C/2⌉ per entry, + 8 per step
``top<k>``         ``topk_values`` (m, k) float16                      2·k + k·(1 | 2) per entry
``top<k>-int8``    ``topk_values_q`` (m, k) uint8                      k + k·(1 | 2) per entry, + 8 per step
``top<k>-int4``    ``topk_values_q4`` (m, ⌈k/2⌉) uint8                 ⌈k/2⌉ + k·(1 | 2) per entry, + 8 / step
=================  ==================================================  =====================================

Top-k formats add ``topk_indices`` (m, k) uint8 (C ≤ 256) or int16: the class of each kept value, values
in descending order. Quantised formats add ``logits_scale`` and ``logits_offset``, (s,) float32 each: one
scale and one offset **per step** (accounted as the ``logits_scale`` component). A 4-bit tensor packs two
codes per byte, row by row: column ``2j`` in the low nibble of byte ``j``, column ``2j + 1`` in the high
nibble (the last high nibble is 0 when ``n`` is odd).

Quantisation is affine and relative to the **step's** min/max (not the row's): with ``L = 255`` (int8) or
``L = 15`` (int4) and ``x`` all kept values of one step as float32, ``offset = min(x)``,
``scale = (max(x) − min(x)) / L`` (float32; 0 when all values are equal), ``q = clamp(round((x − offset) /
scale), 0, L)`` (round half to even; ``q = 0`` when ``scale = 0``). Decoding is ``q · scale + offset`` in
float32 (a multiply, then an add), so every decoded value is within ``scale / 2`` of the value written. Per
step, the parameters cost 8 bytes a step; per row (fp16 scale + offset) they would cost 4 bytes an entry,
40 % of int8's 10 bytes at 10 classes (``bench/label_codecs.py`` measures what each placement costs and keeps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import StoreError
from ..variants import parse_logits_codec

BITS = {"fp16": 16, "int8": 8, "int4": 4}
SUFFIX = {"fp16": "", "int8": "_q", "int4": "_q4"}
QPARAMS = ("logits_scale", "logits_offset")
# Byte → its two 4-bit codes (low nibble, high nibble) as float32: int4 decoding is one table lookup.
_NIBBLES = torch.stack((torch.arange(256) & 15, torch.arange(256) >> 4), 1).to(torch.float32)
_ST_DTYPE = {torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.float16: "F16", torch.float32: "F32"}


def small_int(t: torch.Tensor, limit: int) -> torch.Tensor:
    """Narrowest of uint8 / int16 / int32 that holds values in ``[0, limit]``."""
    return t.to(small_int_dtype(limit))


def small_int_dtype(limit: int) -> torch.dtype:
    """uint8, int16 or int32: the narrowest holding ``[0, limit]``."""
    return torch.uint8 if limit <= 255 else torch.int16 if limit <= 32767 else torch.int32


def quantize(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Affine quantisation of one step's values relative to their min/max (see the module docstring).

    Args:
        x: ``(B, n)`` values (any float dtype; computed in float32).
        levels: ``L``, the largest code (255 for int8, 15 for int4).

    Returns:
        ``(q, scale, offset)``: uint8 ``(B, n)`` codes in ``[0, L]`` and float32 0-d scale and offset.

    Raises:
        StoreError: non-finite values (an fp16 overflow in the teacher), which have no affine code.
    """
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise StoreError("cannot quantise non-finite logits (inf/nan); store them as fp16")
    lo, hi = torch.aminmax(x)
    scale = (hi - lo) / levels
    if float(scale) > 0:
        q = ((x - lo) / scale).round_().clamp_(0, levels).to(torch.uint8)
    else:
        q = torch.zeros(x.shape, dtype=torch.uint8)
    return q, scale, lo


def dequantize(q: torch.Tensor, scale: float | torch.Tensor, offset: float | torch.Tensor) -> torch.Tensor:
    """``q · scale + offset`` as float32 (multiply, then add)."""
    return q.to(torch.float32).mul_(scale).add_(offset)


def pack4(q: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, n)`` codes in ``[0, 15]`` → uint8 ``(B, ⌈n/2⌉)``, column 2j low nibble, 2j+1 high."""
    if q.shape[1] % 2:
        q = torch.cat([q, torch.zeros(q.shape[0], 1, dtype=torch.uint8)], 1)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack4(p: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack4`: uint8 ``(B, ⌈n/2⌉)`` → uint8 ``(B, n)``."""
    return torch.stack((p & 15, p >> 4), dim=2).reshape(p.shape[0], -1)[:, :n]


@dataclass(frozen=True)
class Codec:
    """One logits format for a store of ``num_classes`` classes.

    Attributes:
        fmt: the format string (``fp16``, ``int8``, ``int4``, ``top<k>``, ``top<k>-int8``, ``top<k>-int4``).
        topk: k, or None when every logit is kept.
        values: value encoding, ``fp16``, ``int8`` or ``int4``.
        num_classes: ``C``.
    """

    fmt: str
    topk: int | None
    values: str
    num_classes: int

    @classmethod
    def of(cls, fmt: str, num_classes: int) -> Codec:
        """Raises: ConfigError: unknown format."""
        topk, values = parse_logits_codec(fmt)
        return cls(fmt, topk, values, int(num_classes))

    @property
    def quantised(self) -> bool:
        return self.values != "fp16"

    @property
    def columns(self) -> int:
        """Values kept per entry: ``C`` or ``k``."""
        return self.num_classes if self.topk is None else self.topk

    @property
    def value_name(self) -> str:
        """Name of the value tensor (``logits``, ``logits_q``, ``topk_values_q4`` …)."""
        return ("logits" if self.topk is None else "topk_values") + SUFFIX[self.values]

    def layout(self, entries: int, steps: int) -> dict[str, tuple[str, list[int], int]]:
        """The tensors a shard of ``steps`` steps and ``entries`` entries holds: ``name → (dtype, shape, bytes)``
        (safetensors dtype names), for byte estimates without writing anything."""
        n = self.columns
        width = n if self.values != "int4" else (n + 1) // 2
        vbytes = 2 if self.values == "fp16" else 1
        out = {self.value_name: ("F16" if vbytes == 2 else "U8", [entries, width], vbytes * entries * width)}
        if self.topk is not None:
            dt = small_int_dtype(self.num_classes - 1)
            out["topk_indices"] = (_ST_DTYPE[dt], [entries, n], dt.itemsize * entries * n)
        if self.quantised:
            for name in QPARAMS:
                out[name] = ("F32", [steps], 4 * steps)
        return out

    def encode(self, values: list[torch.Tensor], indices: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Shard tensors from each step's ``(B_i, n)`` kept values (and, top-k, their class indices)."""
        t: dict[str, torch.Tensor] = {}
        if self.topk is not None:
            assert indices is not None
            t["topk_indices"] = small_int(torch.cat(indices), self.num_classes - 1).contiguous()
        if not self.quantised:
            t[self.value_name] = torch.cat(values).to(torch.float16).contiguous()
            return t
        levels = 2 ** BITS[self.values] - 1
        qs, scales, offsets = [], [], []
        for v in values:
            q, s, o = quantize(v, levels)
            qs.append(q)
            scales.append(s)
            offsets.append(o)
        q = torch.cat(qs)
        t[self.value_name] = pack4(q) if self.values == "int4" else q.contiguous()
        t["logits_scale"] = torch.stack(scales).to(torch.float32)
        t["logits_offset"] = torch.stack(offsets).to(torch.float32)
        return t

    def load_params(self, handle: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A shard's per-step ``(scale, offset)`` float32 ``(s,)`` tensors (None for fp16 values)."""
        if not self.quantised:
            return None
        return handle.get_tensor("logits_scale"), handle.get_tensor("logits_offset")

    def decode(self, handle: Any, a: int, b: int, pos: int,
               params: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Entries ``a:b`` (step ``pos`` of the shard) of an open shard: ``(values, class indices or None)``.

        Values are float16 ``(B, n)`` as stored for fp16 formats, float32 dequantised values otherwise.
        """
        idx = handle.get_slice("topk_indices")[a:b].long() if self.topk is not None else None
        raw = handle.get_slice(self.value_name)[a:b]
        if params is None:
            return raw, idx
        scale, offset = params[0][pos], params[1][pos]
        if self.values == "int4":  # the codes of unpack4(raw) as float32, in one lookup
            codes = torch.index_select(_NIBBLES, 0, raw.reshape(-1).long()).view(raw.shape[0], -1)[:, :self.columns]
            return codes.mul_(scale).add_(offset), idx
        # uint8 codes times a float32 0-d scale: promoted to float32 inside the multiply (same values as
        # raw.float() * scale, one kernel fewer)
        return torch.mul(raw, scale).add_(offset), idx
