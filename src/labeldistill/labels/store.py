"""The label store: FKD-style soft labels on disk (``manifest.json`` + safetensors shards).

One stored **step** is one relabel batch: the indices of its images, the augmentation that was applied
(crop box per image as small integers, flip bits packed 8 per byte, optional per-step CutMix permutation,
λ and box) and the teacher's logits on the augmented batch, in the store's logits format (manifest field
``logits_format``: ``fp16``, ``int8``, ``int4``, ``top<k>``, ``top<k>-int8`` or ``top<k>-int4``). Steps are
keyed by their **global step id** ``g = epoch · steps_per_epoch + batch`` — never by their first image (the
reference code's key, which can swap labels between steps).

Shard tensors (``s`` steps; entries = images of the shard's steps, concatenated in step order, ``m`` of them):

===================  ==========================  ============================================================
name                 shape / dtype               content
===================  ==========================  ============================================================
``step_ids``         (s,) int32                  global step ids
``step_offsets``     (s+1,) int32                entry offsets of each step within the shard
``sample_idx``       (m,) int16 | int32          image index of each entry
``crop``             (m, 4) uint8 | int16        crop box ``(x0, y0, w, h)`` in source pixels
``flip``             (ceil(m/8),) uint8          packed flip bits
``mix_perm``         (m,) uint8 | int16          CutMix partner, index within the step (if CutMix)
``mix_lam``          (s,) float16                sampled λ (if CutMix)
``mix_box``          (s, 4) uint8 | int16        CutMix box ``(x0, y0, w, h)``, w = 0: no mix (if CutMix)
``logits``           (m, C) float16              ``fp16``: teacher logits on the augmented (mixed) batch
``logits_q``         (m, C) uint8                ``int8``: quantised logits
``logits_q4``        (m, ceil(C/2)) uint8        ``int4``: 4-bit codes, two per byte (even class: low nibble)
``topk_values``      (m, k) float16              ``top<k>``: the k largest logits, descending
``topk_values_q``    (m, k) uint8                ``top<k>-int8``: the same, quantised
``topk_values_q4``   (m, ceil(k/2)) uint8        ``top<k>-int4``: the same, 4-bit codes two per byte
``topk_indices``     (m, k) uint8 | int16        every top-k format: the class of each kept value
``logits_scale``     (s,) float32                every int8 / int4 format: per-step scale …
``logits_offset``    (s,) float32                … and offset; logit = code · scale + offset
===================  ==========================  ============================================================

The int8 / int4 formats (``L`` = 255 / 15) are quantised relative to the **step's** min/max, not the row's:
over all kept values ``x`` of one step (every entry, every kept class), ``offset = min(x)`` and
``scale = (max(x) − min(x)) / L`` (float32), ``code = round((x − offset) / scale)``; reading gives
``code · scale + offset`` in float32, within ``scale / 2`` of the value written. Byte accounting puts the codes
under the ``logits`` component and scale + offset under ``logits_scale``. Exact layout:
:mod:`labeldistill.labels.codecs`.

Writing goes to a temporary directory renamed into place after the manifest is written, so a store on
disk is either complete or absent. Source: FKD (Shen & Xing, ECCV 2022) / SRe2L relabel; LPLD §5 (spec).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..augment import MixParams, pack_bits, unpack_bits
from ..errors import ConfigError, StoreError
from ..io import atomic_write_json, sha256_file
from .codecs import Codec
from .codecs import small_int as _small_int

SCHEMA_VERSION = 1
FORMAT_NAME = "labeldistill.label_store"
MANIFEST = "manifest.json"

# Which tensor belongs to which storage component (for accounting).
COMPONENTS = {
    "logits": "logits", "crop": "crop", "flip": "flip", "sample_idx": "sample_idx",
    "mix_perm": "mix_index", "mix_lam": "mix_lambda", "mix_box": "mix_box",
    "step_ids": "step_index", "step_offsets": "step_index",
    "topk_values": "logits", "topk_indices": "logits_index",
    "logits_q": "logits", "logits_q4": "logits", "topk_values_q": "logits", "topk_values_q4": "logits",
    "logits_scale": "logits_scale", "logits_offset": "logits_scale",
}


@dataclass
class StepRecord:
    """One stored step.

    Attributes:
        step_id: global step id.
        sample_idx: int64 ``(B,)`` image indices into the image set.
        boxes: int64 ``(B, 4)`` crop boxes ``(x0, y0, w, h)`` in source pixels.
        flips: bool ``(B,)``.
        mix: CutMix parameters or None.
        logits: ``(B, C)`` teacher logits on the augmented batch, or ``(B, k)`` top-k values: float16 as stored
            in an fp16 / top-k store, float32 as decoded from a quantised (int8 / int4) store.
        topk_indices: int64 ``(B, k)`` class indices of ``logits`` in a top-k store, else None.
    """

    step_id: int
    sample_idx: torch.Tensor
    boxes: torch.Tensor
    flips: torch.Tensor
    mix: MixParams | None
    logits: torch.Tensor
    topk_indices: torch.Tensor | None = None

    def soft_targets(self, num_classes: int, temperature: float = 1.0) -> torch.Tensor:
        """Teacher probabilities ``softmax(logits / T)`` as float32 ``(B, C)``.

        For a top-k record the softmax runs over the k stored logits and every other class gets 0
        (the student rebuilds the distribution from what was kept).
        """
        p = torch.softmax(self.logits.float() / temperature, dim=1)
        if self.topk_indices is None:
            return p
        out = torch.zeros(p.shape[0], num_classes)
        return out.scatter_(1, self.topk_indices.long(), p)

    def to_topk(self, k: int) -> "StepRecord":
        """This record with only the k largest logits (and their indices) kept.

        Raises:
            StoreError: the record already holds fewer than k logits.
        """
        if self.topk_indices is not None:
            if k > self.logits.shape[1]:
                raise StoreError(f"cannot make top-{k} labels from a top-{self.logits.shape[1]} store")
            return dataclasses.replace(self, logits=self.logits[:, :k], topk_indices=self.topk_indices[:, :k])
        vals, idx = torch.topk(self.logits.float(), k, dim=1)
        return dataclasses.replace(self, logits=vals.to(torch.float16), topk_indices=idx)


def _shard_tensors(records: list[StepRecord], num_images: int, image_hw: tuple[int, int], cutmix: bool,
                   out_hw: tuple[int, int], codec: Codec) -> dict[str, torch.Tensor]:
    sizes = [len(r.sample_idx) for r in records]
    offsets = torch.zeros(len(records) + 1, dtype=torch.int32)
    offsets[1:] = torch.tensor(sizes, dtype=torch.int32).cumsum(0)
    t: dict[str, torch.Tensor] = {
        "step_ids": torch.tensor([r.step_id for r in records], dtype=torch.int32),
        "step_offsets": offsets,
        "sample_idx": _small_int(torch.cat([r.sample_idx for r in records]), num_images - 1),
        "crop": _small_int(torch.cat([r.boxes for r in records]), max(image_hw)),
        "flip": pack_bits(torch.cat([r.flips for r in records])),
    }
    if codec.topk is None:
        if any(r.topk_indices is not None for r in records):
            raise StoreError(f"cannot write full {codec.fmt} logits from top-k records")
        t.update(codec.encode([r.logits for r in records], None))
    else:
        recs = [r.to_topk(codec.topk) for r in records]
        t.update(codec.encode([r.logits for r in recs], [r.topk_indices for r in recs]))
    if cutmix:
        perms, lams, boxes = [], [], []
        for r, n in zip(records, sizes):
            if r.mix is None:
                perms.append(torch.arange(n))
                lams.append(1.0)
                boxes.append((0, 0, 0, 0))
            else:
                perms.append(r.mix.perm)
                lams.append(r.mix.lam)
                boxes.append(r.mix.box)
        t["mix_perm"] = _small_int(torch.cat(perms), max(sizes) - 1)
        t["mix_lam"] = torch.tensor(lams, dtype=torch.float16)
        t["mix_box"] = _small_int(torch.tensor(boxes, dtype=torch.int64), max(out_hw))
    return t


class LabelStoreWriter:
    """Write a label store shard by shard; :meth:`close` publishes it.

    Shards go to a partial directory ``.<name>.partial`` next to the final path, each followed by a small
    sidecar JSON (its manifest entry), both written atomically. The manifest is written last and the
    directory renamed into place, so a store on disk is complete or absent. With a ``resume_key``, a partial
    directory left by an interrupted run with the same key is kept and its finished shards are reused
    (:meth:`shard_done`); any other partial directory is discarded. Shards can be written by several
    processes (one writer per rank, shard indices disjoint); one of them calls :meth:`close`.

    Args:
        path: final store directory (must not exist, or ``overwrite=True``).
        meta: manifest fields (class_to_idx, fingerprints, augmentation spec, epochs, batch size …);
            must include ``num_images``, ``image_hw`` ``[H, W]``, ``input_size`` ``[H', W']``, ``cutmix`` and
            ``num_classes``; ``logits_format`` (``fp16`` default, ``int8``, ``int4``, ``top<k>``, ``top<k>-int8``,
            ``top<k>-int4``; see :mod:`~labeldistill.labels.codecs`) converts records on write.
        steps_per_shard: steps per safetensors file for :meth:`add`.
        resume_key: settings fingerprint allowing reuse of an interrupted run's shards.
        prepare: create (or validate) the partial directory; ranks other than 0 pass False after a barrier.

    Raises:
        StoreError: ``path`` exists and ``overwrite`` is False.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], steps_per_shard: int = 200,
                 overwrite: bool = False, resume_key: str | None = None, prepare: bool = True):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"label store already exists: {self.path}")
        for k in ("num_images", "image_hw", "input_size", "cutmix", "num_classes"):
            if k not in meta:
                raise ValueError(f"label store meta needs '{k}'")
        self.meta = dict(meta)
        self.meta.setdefault("logits_format", "fp16")
        self.codec = Codec.of(self.meta["logits_format"], int(self.meta["num_classes"]))
        self.topk = self.codec.topk
        self.steps_per_shard = max(1, int(steps_per_shard))
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        key_file = self.tmp / "resume_key.json"
        if prepare:
            keep = (resume_key is not None and key_file.is_file()
                    and json.loads(key_file.read_text()).get("key") == resume_key)
            if not keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp.mkdir(parents=True)
                atomic_write_json(key_file, {"key": resume_key})
        self.buffer: list[StepRecord] = []
        self.next_shard = 0

    def shard_done(self, index: int) -> bool:
        """True if shard ``index`` was completely written (sidecar present, size matches)."""
        side = self.tmp / f"shard_{index:05d}.json"
        if not side.is_file():
            return False
        try:
            entry = json.loads(side.read_text())
        except ValueError:
            return False
        f = self.tmp / entry["file"]
        return f.is_file() and f.stat().st_size == entry["bytes"]

    def write_shard(self, index: int, records: list[StepRecord]) -> dict[str, Any]:
        """Write shard ``index`` from ``records`` (atomically, then its sidecar); returns its manifest entry."""
        tensors = _shard_tensors(records, self.meta["num_images"], tuple(self.meta["image_hw"]),
                                 bool(self.meta["cutmix"]), tuple(self.meta["input_size"]), self.codec)
        name = f"shard_{index:05d}.safetensors"
        tmp = self.tmp / f".{name}.tmp-{os.getpid()}"
        save_file(tensors, str(tmp))
        os.replace(tmp, self.tmp / name)
        comps: dict[str, int] = {}
        for k, v in tensors.items():
            comps[COMPONENTS[k]] = comps.get(COMPONENTS[k], 0) + v.numel() * v.element_size()
        entry = {
            "file": name,
            "num_steps": len(records),
            "num_entries": int(tensors["step_offsets"][-1]),
            "first_step": int(tensors["step_ids"][0]),
            "bytes": (self.tmp / name).stat().st_size,
            "sha256": sha256_file(self.tmp / name),
            "component_bytes": comps,
        }
        atomic_write_json(self.tmp / f"shard_{index:05d}.json", entry)
        return entry

    def add(self, record: StepRecord) -> None:
        """Buffer one record; a shard is written every ``steps_per_shard`` records."""
        self.buffer.append(record)
        if len(self.buffer) >= self.steps_per_shard:
            self._flush()

    def extend(self, records: Iterable[StepRecord]) -> None:
        for r in records:
            self.add(r)

    def _flush(self) -> None:
        if self.buffer:
            self.write_shard(self.next_shard, self.buffer)
            self.next_shard += 1
            self.buffer = []

    def abort(self) -> None:
        """Discard everything written (not used on a kill: then the partial directory is kept for resuming)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def close(self, num_shards: int | None = None) -> "LabelStore":
        """Flush, write the manifest last, rename into place; returns the opened store.

        Args:
            num_shards: number of shards expected (default: those written through :meth:`add`).

        Raises:
            StoreError: a shard is missing, or the store would be empty.
        """
        self._flush()
        n = self.next_shard if num_shards is None else num_shards
        shards, comps = [], {}
        for i in range(n):
            side = self.tmp / f"shard_{i:05d}.json"
            if not self.shard_done(i):
                raise StoreError(f"shard {i} of {self.path} is missing; re-run to finish it")
            entry = json.loads(side.read_text())
            for k, v in entry.pop("component_bytes").items():
                comps[k] = comps.get(k, 0) + v
            shards.append(entry)
        if not shards:
            self.abort()
            raise StoreError(f"refusing to write an empty label store: {self.path}")
        manifest = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            **self.meta,
            "num_steps": sum(s["num_steps"] for s in shards),
            "num_entries": sum(s["num_entries"] for s in shards),
            "component_bytes": dict(sorted(comps.items())),
            "shards": shards,
        }
        for f in list(self.tmp.glob("*.json")):
            f.unlink()
        atomic_write_json(self.tmp / MANIFEST, manifest)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.path)
        return LabelStore(self.path)


# Manifest keys every reader relies on, and their JSON types (optional keys are checked when present).
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "num_images": (int,), "num_classes": (int,), "cutmix": (bool,), "image_hw": (list,), "input_size": (list,),
    "shards": (list,)}
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "logits_format": (str,), "image_fingerprint": (str,), "teacher_fingerprint": (str,), "normalization": (dict,),
    "prune": (dict,), "epochs": (int,), "steps_per_epoch": (int,), "batch_size": (int,)}
_SHARD_TYPES: dict[str, tuple[type, ...]] = {"file": (str,), "bytes": (int,), "sha256": (str,)}


def check_manifest(manifest: dict, where: Path) -> None:
    """Refuse a manifest whose keys a reader relies on are missing or of the wrong JSON type.

    Raises:
        StoreError: naming the first bad key (a corrupt or hand-edited ``manifest.json``).
    """
    def bad(key: str, value: Any, want: tuple[type, ...]) -> bool:
        return not isinstance(value, want) or (want == (int,) and isinstance(value, bool))

    fix = "the store is corrupt, re-run relabel"
    for key, want in _MANIFEST_TYPES.items():
        if bad(key, manifest.get(key), want):
            raise StoreError(f"{where}: '{key}' is missing or not a {want[0].__name__}; {fix}")
    for key, want in _OPTIONAL_TYPES.items():
        if key in manifest and bad(key, manifest[key], want):
            raise StoreError(f"{where}: '{key}' is not a {want[0].__name__}; {fix}")
    if manifest["num_classes"] < 1 or not manifest["shards"]:
        raise StoreError(f"{where}: no classes or no shards; {fix}")
    for i, sh in enumerate(manifest["shards"]):
        for key, want in _SHARD_TYPES.items():
            if not isinstance(sh, dict) or bad(key, sh.get(key), want):
                raise StoreError(f"{where}: shard {i} has no valid '{key}'; {fix}")
        if Path(sh["file"]).name != sh["file"]:
            raise StoreError(f"{where}: shard file '{sh['file']}' is not a file name in the store; {fix}")
    norm = manifest.get("normalization", {"mean": [], "std": []})
    if not all(isinstance(norm.get(k), list) for k in ("mean", "std")):
        raise StoreError(f"{where}: 'normalization' needs 'mean' and 'std' lists; {fix}")


class LabelStore:
    """Read-only, lazy view of a label store: shards are memory-mapped and read one step at a time.

    Raises:
        StoreError: missing directory or manifest, wrong format or schema version, missing or resized shard.
    """

    def __init__(self, path: str | Path, verify: bool = False):
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not mf.is_file():
            raise StoreError(f"not a label store (no {MANIFEST}): {self.path}")
        try:
            self.manifest = json.loads(mf.read_text())
        except ValueError as e:
            raise StoreError(f"{mf} is not valid JSON ({e}); the store is corrupt, re-run relabel") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT_NAME:
            raise StoreError(f"{self.path} is not a {FORMAT_NAME} directory")
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {self.manifest.get('schema_version')}; this "
                             f"labeldistill reads version {SCHEMA_VERSION}: re-run relabel")
        check_manifest(self.manifest, mf)
        self._index: dict[int, tuple[int, int]] = {}
        self._offsets: list[torch.Tensor] = []
        self._qparams: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        try:
            self.codec = Codec.of(self.manifest.get("logits_format", "fp16"), self.manifest["num_classes"])
        except ConfigError:
            raise StoreError(f"{self.path} stores logits as '{self.manifest.get('logits_format')}', a format this "
                             "labeldistill cannot read: upgrade labeldistill or re-run relabel") from None
        self._handles: dict[int, Any] = {}
        self._handle_pid = os.getpid()
        for si, sh in enumerate(self.manifest["shards"]):
            f = self.path / sh["file"]
            if not f.is_file():
                raise StoreError(f"label store {self.path} is missing shard {sh['file']}")
            if f.stat().st_size != sh["bytes"]:
                raise StoreError(f"shard {f} has {f.stat().st_size} bytes, manifest says {sh['bytes']}: "
                                 "the store is truncated or altered")
            if verify and sha256_file(f) != sh["sha256"]:
                raise StoreError(f"shard {f} fails its SHA-256 check: the store is corrupt")
            ids = self._read_index(si)
            for pos, g in enumerate(ids):
                self._index[int(g)] = (si, pos)

    def _read_index(self, si: int) -> list[int]:
        """Shard ``si``'s step ids; keeps its entry offsets and quantisation parameters.

        Raises:
            StoreError: a missing tensor, or offsets that do not fit the step ids and the entries.
        """
        h = self._open(si)
        f = self.path / self.manifest["shards"][si]["file"]
        try:
            ids = h.get_tensor("step_ids").tolist()
            off = h.get_tensor("step_offsets").long()
            entries = h.get_slice("sample_idx").get_shape()[0]
            self._qparams.append(self.codec.load_params(h))
        except (SafetensorError, RuntimeError, ValueError, TypeError) as e:
            raise StoreError(f"cannot read shard {f}: {str(e).splitlines()[0]}; the store is corrupt") from None
        if off.dim() != 1 or len(off) != len(ids) + 1 or int(off[0]) != 0 or int(off[-1]) != entries or \
                bool((off[1:] < off[:-1]).any()):
            raise StoreError(f"shard {f}: step offsets do not fit its {len(ids)} steps and {entries} entries; "
                             "the store is corrupt, re-run relabel")
        self._offsets.append(off)
        return ids

    def _open(self, si: int) -> Any:
        if self._handle_pid != os.getpid():  # after a fork (DataLoader workers): reopen
            self._handles, self._handle_pid = {}, os.getpid()
        if si not in self._handles:
            f = self.path / self.manifest["shards"][si]["file"]
            try:
                self._handles[si] = safe_open(str(f), framework="pt")
            except (SafetensorError, OSError) as e:
                raise StoreError(f"cannot read shard {f}: {e}") from None
        return self._handles[si]

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_handles"] = {}
        return d

    @property
    def step_ids(self) -> list[int]:
        """Kept global step ids, sorted."""
        return sorted(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, step_id: int) -> bool:
        return step_id in self._index

    def get(self, step_id: int) -> StepRecord:
        """Read one stored step.

        Raises:
            KeyError: the step id is not in this store (e.g. pruned away).
            StoreError: the shard's tensors cannot be read or do not fit together (a corrupt store).
        """
        si, pos = self._index[int(step_id)]
        try:
            return self._read_step(int(step_id), si, pos)
        except (SafetensorError, RuntimeError, IndexError, ValueError) as e:
            f = self.path / self.manifest["shards"][si]["file"]
            raise StoreError(f"cannot read step {step_id} from shard {f}: {str(e).splitlines()[0]}; the store is "
                             "corrupt (store verify names the shard), re-run relabel") from None

    def _read_step(self, step_id: int, si: int, pos: int) -> StepRecord:
        h = self._open(si)
        off = self._offsets[si]
        a, b = int(off[pos]), int(off[pos + 1])
        n = b - a
        flips_packed = h.get_slice("flip")[a // 8: (b + 7) // 8]
        bits = unpack_bits(flips_packed, (b + 7) // 8 * 8 - (a // 8) * 8)
        flips = bits[a - (a // 8) * 8: a - (a // 8) * 8 + n]
        mix = None
        logits, topk_idx = self.codec.decode(h, a, b, pos, self._qparams[si])
        if self.manifest["cutmix"]:
            box = tuple(int(v) for v in h.get_slice("mix_box")[pos:pos + 1][0].tolist())
            if box[2] > 0 and box[3] > 0:
                mix = MixParams(h.get_slice("mix_perm")[a:b].long(),
                                float(h.get_slice("mix_lam")[pos:pos + 1][0]), box)  # type: ignore[arg-type]
        return StepRecord(
            step_id=int(step_id),
            sample_idx=h.get_slice("sample_idx")[a:b].long(),
            boxes=h.get_slice("crop")[a:b].long(),
            flips=flips,
            mix=mix,
            logits=logits,
            topk_indices=topk_idx,
        )

    def bytes_on_disk(self) -> int:
        """Total size in bytes of the store directory's files (manifest + shards)."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def verify(self) -> None:
        """Check every shard's SHA-256 against the manifest.

        Raises:
            StoreError: naming the first corrupt shard.
        """
        for sh in self.manifest["shards"]:
            if sha256_file(self.path / sh["file"]) != sh["sha256"]:
                raise StoreError(f"shard {self.path / sh['file']} fails its SHA-256 check: the store is corrupt")
