"""Dataset registry.

Every dataset loads as a :class:`TensorDataset`-like :class:`ImageSet`: ``images`` as uint8
``(N, C, H, W)`` — an in-memory tensor, or for ``imagefolder`` with ``lazy=True`` a
:class:`~labeldistill.data.imagefolder.LazyImages` that decodes files when indexed — ``labels`` as int64
``(N,)`` (always in memory), the class names and per-dataset normalisation. Nothing is downloaded: users
point ``data.root`` at their own files.
"""

from __future__ import annotations

from . import cifar, digits, idx, imagefolder, imagenet, mnist5k  # noqa: E402,F401  (registration side effects)
from .presets import augmentation_summary, resolve_augmentation  # noqa: E402,F401
from .loading import data_options, denormalize, iter_batches, load_split, normalize  # noqa: E402,F401
from .registry import (  # noqa: F401
                       ImageSet,
                       check_dataset_options,
                       data_identity,
                       dataset_options,
                       list_datasets,
                       load_dataset,
                       register_dataset,
)
