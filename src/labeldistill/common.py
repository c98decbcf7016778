"""Old import path, kept so existing scripts keep working. Nothing inside the package imports it; each name
now lives in the module that owns its concept (see docs/architecture.md):

* :mod:`labeldistill.data` — ``normalize``, ``denormalize``, ``load_split``, ``data_options``, ``iter_batches``
* :mod:`labeldistill.training` — ``cosine_lr``, ``evaluate``
* :mod:`labeldistill.runtime` — ``autocast``
* :mod:`labeldistill.models` — ``build_model``; :mod:`labeldistill.models.checkpoint` — ``save_teacher``,
  ``load_teacher``
* :mod:`labeldistill.layout` — ``RunLayout``, ``label_tag``, ``format_factor``
"""

from .data import data_options, denormalize, iter_batches, load_split, normalize  # noqa: F401
from .layout import RunLayout, format_factor, label_tag  # noqa: F401
from .models import build_model  # noqa: F401
from .models.checkpoint import load_teacher, save_teacher  # noqa: F401
from .runtime import autocast  # noqa: F401
from .training import cosine_lr, evaluate  # noqa: F401
