"""Model registry: ``create_model(name, num_classes, in_channels, image_size, **kwargs)``.

Builders register with :func:`register_model`; ``torchvision:<name>`` and ``timm:<name>`` build zoo models
(:mod:`.zoo`) and ``<module>:<factory>`` a user's own architecture (:mod:`.registry`). Unknown names and
unknown keyword arguments raise :class:`~labeldistill.errors.RegistryError` listing what is known or close.
"""

from __future__ import annotations

from . import convnet, lenet, mlp, resnet, zoo  # noqa: E402,F401  (registration side effects)
from .hooks import bn_layers, forward_hooks, require_bn_layers  # noqa: F401
from .registry import build_model, check_model_spec, create_model, list_models, register_family, register_model  # noqa: F401,E501
