"""Model registry: ``create_model(name, num_classes, in_channels, image_size, **kwargs)``.

Builders register with :func:`register_model`; unknown names and unknown keyword arguments raise
:class:`~labeldistill.errors.RegistryError` listing what is known.
"""

from __future__ import annotations

from . import convnet, lenet, mlp, resnet  # noqa: E402,F401  (registration side effects)
from .hooks import bn_layers, forward_hooks, require_bn_layers  # noqa: F401
from .registry import build_model, check_model_spec, create_model, list_models, register_model  # noqa: F401
