"""Soft-label batches for any training loop: a label store replayed exactly as validate replays it.

A stored step is one whole training batch: the step's images cropped, flipped and (if stored) CutMix-ed with
the stored parameters (:func:`~labeldistill.labels.replay.build_batch`, the code relabel used before the teacher
saw the batch), normalised with the store's mean and std, and the teacher's probabilities at temperature ``T``,
``softmax(logits / T)`` (top-k stores: softmax over the kept logits, 0 elsewhere). :class:`SoftLabelBatches`
yields these ``(images (B, C, H, W), targets (B, K))`` pairs in validate's replay order
(:class:`PoolSampler`): ``ordered`` for an unpruned store (training epoch ``e`` replays stored epoch ``e``),
``pool`` for a pruned one (steps drawn with replacement from the kept pool, seeded per epoch). validate trains
its students on this same object, so the batches a user gets are the batches validate trains on.

Loading is stock ``torch.utils.data``: a map-style dataset whose item is one stored step
(:class:`StoredStepDataset`, ``batch_size=None``) and a sampler of step ids; labels are read lazily from the
memory-mapped shards. :func:`load_soft_label_batches` builds it from a run directory with the run's settings,
:func:`load_eval_split` gives the real split a student is scored on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..augment import Stream, step_generator
from ..config import Config, load_config
from ..data import ImageSet, load_split, normalize
from ..data.synthetic import load_synthetic
from ..distributed import rank_world
from ..errors import ConfigError, StoreError
from ..layout import LabelVariant, RunLayout
from .pool import recipe_mismatch
from .replay import build_batch
from .store import LabelStore


class StoredStepDataset(Dataset):
    """Map-style dataset: ``ds[step_id]`` → (normalised augmented batch ``(B, C, H, W)``, targets ``(B, K)``).

    Targets are the teacher's probabilities at temperature ``T`` (float32, rows sum to 1): the stored logits', or
    with ``image_logits`` ``softmax(image_logits[i] / T)`` of each entry's own image ``i`` (CutMix mixes pixels
    only, as DD-Ranking 0.2.0's mode ``S``; ``validate.label_source: static``). With ``world`` > 1
    the item holds rows ``rank::world`` of the step's batch (validate's split of a step across ranks).

    Args:
        store: the (pruned) label store.
        images: the images the store was made from: uint8 ``(N, C, H, W)`` (converted per step by
            :func:`~labeldistill.labels.replay.build_batch`) or float in [0, 1].
        temperature: KD temperature ``T``, or a function of the training epoch giving it (then index the dataset
            with ``(step_id, epoch)``; ``validate.calibration: lpqld``).
        hard_labels: int64 ``(N,)`` classes of the images; when given, ``ds[step_id]`` also returns each
            entry's hard label (the class of its own image, before CutMix): a 3-tuple.
        rank, world: this process's rank and the number of ranks (defaults: no split).
        image_logits: float ``(N, K)`` per-image logits used instead of the stored ones (``label_source: static``).
    """

    def __init__(self, store: LabelStore, images: torch.Tensor, temperature: float | Callable[[int], float] = 1.0,
                 hard_labels: torch.Tensor | None = None, rank: int = 0, world: int = 1,
                 image_logits: torch.Tensor | None = None):
        self.store = store
        self.image_logits = image_logits
        self.hard_labels = hard_labels
        self.images = images
        self.temperature = temperature
        self.num_classes = store.manifest["num_classes"]
        m = store.manifest
        self.out_hw = tuple(m["input_size"])
        self.mean = tuple(m["normalization"]["mean"])
        self.std = tuple(m["normalization"]["std"])
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        step_id, epoch = key if isinstance(key, tuple) else (key, None)
        rec = self.store.get(step_id)
        x = build_batch(self.images, rec, self.out_hw, self.mean, self.std)
        temp = self.temperature(epoch) if callable(self.temperature) else self.temperature
        if self.image_logits is None:
            t = rec.soft_targets(self.num_classes, temp)
        else:  # each entry's own image's logits; CutMix mixed its pixels only
            t = torch.softmax(self.image_logits[rec.sample_idx].float() / temp, 1)
        out = (x, t) if self.hard_labels is None else (x, t, self.hard_labels[rec.sample_idx])  # own image's class
        return out if self.world == 1 else tuple(v[self.rank::self.world] for v in out)


class PoolSampler(Sampler[int]):
    """Yields the step ids of ``epochs`` training epochs drawn from the kept ``pool``.

    Replay ``pool``, granularity ``batch``: each epoch draws ``steps_per_epoch`` ids uniformly with replacement
    from the pool. Granularity ``epoch``: each epoch draws one stored epoch (``id // steps_per_epoch``) uniformly
    with replacement among those in the pool and yields its kept steps in stored order. Seeded per epoch.
    Replay ``ordered`` (either granularity): training epoch ``e`` yields the kept steps of the ``e mod K``-th of
    the ``K`` kept stored epochs, in stored order (at factor 1: stored epoch ``e``). With ``tag_epochs`` it yields
    ``(step id, training epoch)`` pairs instead (the same steps).
    """

    def __init__(self, pool: list[int], steps_per_epoch: int, epochs: int, seed: int, granularity: str = "batch",
                 start_epoch: int = 0, replay: str = "pool", tag_epochs: bool = False):
        self.pool, self.spe, self.epochs, self.seed = sorted(pool), steps_per_epoch, epochs, seed
        self.start_epoch = start_epoch
        self.granularity = granularity
        self.replay = replay
        self.tag_epochs = tag_epochs
        self.by_epoch: dict[int, list[int]] = {}
        for g in self.pool:
            self.by_epoch.setdefault(g // steps_per_epoch, []).append(g)
        self.epoch_ids = sorted(self.by_epoch)

    def __len__(self) -> int:
        return sum(self.epoch_len(e) for e in range(self.start_epoch, self.epochs))

    def epoch_len(self, e: int) -> int:
        """Steps in training epoch ``e``."""
        if self.granularity == "epoch" or self.replay == "ordered":
            return len(list(self._epoch_steps(e)))
        return self.spe

    def _epoch_steps(self, e: int) -> Iterator[int]:
        if self.replay == "ordered":
            yield from self.by_epoch[self.epoch_ids[e % len(self.epoch_ids)]]
            return
        g = step_generator(self.seed, Stream.VALIDATE_POOL, e)
        if self.granularity == "epoch":
            pick = self.epoch_ids[int(torch.randint(len(self.epoch_ids), (1,), generator=g))]
            yield from self.by_epoch[pick]
        else:
            for i in torch.randint(len(self.pool), (self.spe,), generator=g).tolist():
                yield self.pool[i]

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        for e in range(self.start_epoch, self.epochs):
            if self.tag_epochs:
                yield from ((g, e) for g in self._epoch_steps(e))
            else:
                yield from self._epoch_steps(e)


def check_store_matches(store: LabelStore, image_fp: str, teacher_fp: str | None = None) -> None:
    """Refuse a store made for another image set (or teacher).

    Raises:
        StoreError: naming both fingerprints.
    """
    m = store.manifest
    if m["image_fingerprint"] != image_fp:
        raise StoreError(f"label store {store.path} belongs to image set {m['image_fingerprint']}, "
                         f"not to the given images {image_fp}: relabel these images")
    if teacher_fp is not None and m["teacher_fingerprint"] != teacher_fp:
        raise StoreError(f"label store {store.path} was made by teacher {m['teacher_fingerprint']}, "
                         f"not by {teacher_fp}")


class SoftLabelBatches:
    """The training batches of a label store, in validate's replay order: iterate for
    ``(images (B, C, H, W), targets (B, K))``.

    ``images``: float32, the stored crops / flips / CutMix applied and normalised with the store's mean and std;
    ``targets``: float32 ``softmax(logits / T)`` (rows sum to 1). ``B`` is the store's batch size (the last
    step of a stored epoch may be smaller), divided among ranks: under DDP every rank replays every step and
    keeps rows ``rank::world`` of it (as validate does, DistributedDataParallel then averages the gradients).
    Iteration runs a stock ``DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers)``:
    worker processes each build whole steps (read, replay the augmentation, decode the labels) and the batches
    arrive in the sampler's order, so workers change the speed, never the batches.

    Attributes:
        dataset: the map-style :class:`StoredStepDataset` (item: one stored step, keyed by its step id).
        sampler: the :class:`PoolSampler` giving the step ids in replay order.
        epochs, seed, replay, rank, world, temperature, num_workers: as given (defaults resolved).
        num_classes: ``K``. input_shape: ``(C, H, W)`` of the batches' images (the store's input size).
        mean, std: the normalisation applied (per channel, [0, 1] units); the store's.

    Args:
        store: the label store (a full or pruned one).
        images: the image set the store was made from, uint8 (or float in [0, 1]) ``(N, C, H, W)``, in the
            order of the store's image indices (check with :func:`check_store_matches`).
        temperature: ``T`` (validate's ``validate.temperature``), or a function of the 0-based training epoch
            giving it (then every item is keyed by ``(step id, epoch)``).
        epochs: training epochs; ``None`` = the store's stored epochs.
        seed: seed of replay ``pool``'s draws (the run's ``seed``).
        replay: ``ordered`` or ``pool``; ``None`` = ``ordered`` for an unpruned store (factor 1), ``pool``
            otherwise (:meth:`~labeldistill.layout.LabelVariant.default_replay`).
        rank, world: this process's share of every step; ``None`` = torch.distributed's (0 and 1 without a
            process group).
        num_workers: DataLoader worker processes (0: build the steps in this process).
        hard_labels: int64 ``(N,)`` image classes; items then carry each row's class too (a 3-tuple).
        start_epoch: skip the training epochs before this one (resuming).
        image_logits: float ``(N, K)`` per-image logits replacing the stored ones (``validate.label_source:
            static``: the logits an imported ``tensor`` set brought with it).

    Raises:
        ConfigError: an unknown replay, or a rank outside ``[0, world)``.
    """

    def __init__(self, store: LabelStore, images: torch.Tensor, temperature: float | Callable[[int], float] = 1.0,
                 *, epochs: int | None = None, seed: int = 0, replay: str | None = None, rank: int | None = None,
                 world: int | None = None, num_workers: int = 0, hard_labels: torch.Tensor | None = None,
                 start_epoch: int = 0, image_logits: torch.Tensor | None = None):
        m = store.manifest
        prune = m.get("prune", {})
        self.replay = replay or LabelVariant.default_replay(prune.get("factor", 1.0))
        if self.replay not in ("ordered", "pool"):
            raise ConfigError(f"unknown replay '{self.replay}'; known: ordered, pool")
        default_rank, default_world = rank_world()
        self.rank = default_rank if rank is None else rank
        self.world = default_world if world is None else world
        if not 0 <= self.rank < self.world:
            raise ConfigError(f"rank {self.rank} is outside [0, world={self.world})")
        self.store, self.temperature, self.seed = store, temperature, seed
        self.epochs = epochs or m["epochs"]
        self.num_workers = num_workers
        self.num_classes = m["num_classes"]
        self.mean, self.std = tuple(m["normalization"]["mean"]), tuple(m["normalization"]["std"])
        self.input_shape = (m["channels"], *m["input_size"])
        self.dataset = StoredStepDataset(store, images, temperature, hard_labels, self.rank, self.world, image_logits)
        self.sampler = PoolSampler(store.step_ids, m["steps_per_epoch"], self.epochs, seed,
                                   prune.get("granularity", "batch"), start_epoch=start_epoch, replay=self.replay,
                                   tag_epochs=callable(temperature))

    def __len__(self) -> int:
        """Steps (batches) from ``start_epoch`` to the end."""
        return len(self.sampler)

    def epoch_len(self, epoch: int) -> int:
        """Steps in 0-based training epoch ``epoch``."""
        return self.sampler.epoch_len(epoch)

    def loader(self, **kwargs) -> DataLoader:
        """The ``DataLoader`` iteration uses; ``kwargs`` (``pin_memory``, ``num_workers`` …) go to it."""
        kwargs.setdefault("num_workers", self.num_workers)
        return DataLoader(self.dataset, batch_size=None, sampler=self.sampler, **kwargs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return iter(self.loader())


def open_store(layout: RunLayout, mode: str, variant: LabelVariant,
               store_path: Path | None = None) -> tuple[LabelStore, ImageSet, dict]:
    """The label store of ``mode`` × ``variant`` (or the one at ``store_path``), the image set it was made from
    (uint8 ``(N, C, H, W)``) and that set's ``images.json``. Under torchrun (``WORLD_SIZE`` > 1) the images are a
    read-only memory map of ``RunLayout.image_cache`` shared by the ranks (:func:`~labeldistill.data.synthetic.load_synthetic`).

    Raises:
        StoreError: no store there, a store made with another pool, or one made for other images.
        LabelDistillError: no images of ``mode`` (run recover first).
    """
    path = Path(store_path) if store_path else layout.pruned_store(mode, variant)
    if not (path / "manifest.json").is_file():
        raise StoreError(f"no label store at {path}: run 'labeldistill prune CONFIG' first")
    store = LabelStore(path)
    if diff := recipe_mismatch(store.manifest.get("prune", {}), variant):
        raise StoreError(f"label store {path} was made with {diff}: rebuild it with 'labeldistill prune --force'")
    norm = store.manifest["normalization"]
    shared = layout.image_cache if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None  # torchrun: one copy
    data, img_meta = load_synthetic(layout.images_dir(mode), norm["mean"], norm["std"], share_dir=shared)
    check_store_matches(store, img_meta["fingerprint"])
    return store, data, img_meta


def run_config(run_dir: str | Path) -> Config:
    """The resolved config a run directory was made with (its ``config.yaml``).

    Raises:
        ConfigError: no ``config.yaml`` in ``run_dir`` (not a run directory), or a bad one.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"no config.yaml in {run_dir}: give a run directory made by 'labeldistill run'")
    return load_config(path)


def load_soft_label_batches(run_dir: str | Path, mode: str, variant: LabelVariant | float = 1.0, *rest: str,
                            store_path: str | Path | None = None, rank: int | None = None,
                            world: int | None = None, **parts: str) -> SoftLabelBatches:
    """The batches validate trains its students on for ``mode``'s images and a label store of a run.

    The run's ``config.yaml`` gives the temperature (``validate.temperature``), the training epochs
    (``validate.epochs``, default the stored epochs), the seed of the pool draws (``seed``) and the DataLoader
    workers (``data.workers``); the variant gives the replay (``ordered`` at factor 1, else ``pool``, unless
    ``replay=`` is given). These are validate's batches with its default labels (``validate.label_source:
    stored``, ``validate.calibration: none``); a label model or LPQLD calibration changes the targets validate
    uses, not these.

    Args:
        run_dir: the run directory (``runs/<name>``).
        mode: the recover mode (images ``images/<mode>/``).
        variant: a :class:`~labeldistill.layout.LabelVariant`, or its factor followed by (or with keywords for)
            strategy, logits, granularity, pool and replay — as :func:`labeldistill.validate.validate` takes it.
        store_path: read this store instead of the variant's store in the run directory.
        rank, world: see :class:`SoftLabelBatches`.

    Raises:
        ConfigError: not a run directory, or a bad rank or replay.
        StoreError: see :func:`open_store`.
    """
    cfg = run_config(run_dir)
    v = LabelVariant.of(variant, *rest, **parts)
    store, data, _ = open_store(RunLayout(Path(run_dir)), mode, v, Path(store_path) if store_path else None)
    return SoftLabelBatches(store, data.uint8_images(), cfg.validate.temperature, epochs=cfg.validate.epochs,
                            seed=cfg.seed, replay=v.replay_mode, rank=rank, world=world,
                            num_workers=cfg.data.workers)


def load_eval_split(run_dir: str | Path, mean: tuple[float, ...], std: tuple[float, ...],
                    split: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The real split a run's students are scored on, in memory: float32 images ``(N, C, H, W)`` normalised as
    validate normalises them (``(x / 255 − mean) / std``), and int64 labels ``(N,)``.

    Args:
        run_dir: the run directory (its ``config.yaml`` names the dataset, its subset and its root).
        mean, std: the normalisation, per channel in [0, 1] units (:attr:`SoftLabelBatches.mean` / ``std``).
        split: ``test`` or ``holdout``; ``None`` = ``validate.eval_split``.

    Raises:
        ConfigError: not a run directory, or an unknown split.
        DataError: the dataset files are missing.
    """
    cfg = run_config(run_dir)
    data = load_split(cfg, split or cfg.validate.eval_split)
    return normalize(data.uint8_images().float() / 255, tuple(mean), tuple(std)), data.labels
