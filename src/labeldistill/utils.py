"""Old import path, kept so existing scripts keep working: these helpers now live in
:mod:`labeldistill.io` (files, fingerprints, metrics) and :mod:`labeldistill.runtime` (device, rank, allocator).
Nothing inside the package imports this module.
"""

from .io import (  # noqa: F401
                 MetricsLog,
                 atomic_dir,
                 atomic_write_bytes,
                 atomic_write_json,
                 dir_bytes,
                 model_fingerprint,
                 read_json,
                 sha256_file,
                 tensor_fingerprint,
)
from .runtime import is_rank0, pick_device, tune_malloc  # noqa: F401
