"""Freezing an encoder, whole or its first stages, and keeping its batch norms fixed.

A frozen part's parameters stop requiring gradients (the optimiser leaves them as they
are) and its batch-norm layers run in eval mode, using and keeping their (e.g. ImageNet)
statistics, whatever ``model.train()`` says: a forward pre-hook puts each such layer back
in eval mode before it runs. Nothing is renamed or wrapped, so ``state_dict`` keys stay
those of the unfrozen model and checkpoints load either way.

An encoder exposes its stages, in input-to-output order, as ``stages()``: a sequence of
stages, each a tuple of modules (ResNet: the stem ``conv1 + bn1``, ``layer1`` ...
``layer4``; MobileNetV2: the stem, its seven bottleneck groups and the final 1x1 conv).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FREEZE_ALL", "freeze_backbone", "freeze_modules", "is_frozen_norm"]

FREEZE_ALL = -1
"""``frozen_stages`` value that freezes the whole encoder (a fixed feature extractor)."""

_FROZEN_FLAG = "_spin_frozen_norm"


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.training = False


def _freeze_norm(norm: _BatchNorm) -> None:
    if getattr(norm, _FROZEN_FLAG, False):
        return
    norm.register_forward_pre_hook(_keep_eval)
    setattr(norm, _FROZEN_FLAG, True)
    norm.eval()


def is_frozen_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a batch norm that :func:`freeze_modules` keeps in eval mode."""
    return isinstance(module, _BatchNorm) and getattr(module, _FROZEN_FLAG, False)


def freeze_modules(modules: Iterable[nn.Module], norms_only: bool = False) -> None:
    """Freeze ``modules``: their batch norms always run in eval mode with fixed affine
    parameters, and (unless ``norms_only``) every other parameter stops requiring grad."""
    for module in modules:
        if not norms_only:
            module.requires_grad_(False)
        for norm in module.modules():
            if isinstance(norm, _BatchNorm):
                norm.requires_grad_(False)
                _freeze_norm(norm)


def freeze_backbone(module: nn.Module, frozen_stages: int = 0, freeze_bn: bool = False) -> None:
    """Freeze an encoder as a :class:`~spin.regressor.backbones.BackboneConfig` says.

    Args:
        module: the encoder; for ``frozen_stages > 0`` it must have ``stages()``.
        frozen_stages: 0 trains everything; N > 0 freezes the first N stages;
            :data:`FREEZE_ALL` (-1) freezes the whole encoder.
        freeze_bn: also keep every batch norm of the encoder in eval mode with fixed affine
            parameters (the convolutions of the unfrozen stages still train), as detection
            models fine-tuned at small batch sizes do.

    Raises:
        ValueError: ``frozen_stages`` is below -1, exceeds the encoder's stages, or the
            encoder has no stages.
    """
    if frozen_stages < FREEZE_ALL:
        raise ValueError(
            f"frozen_stages must be -1 (all), 0 (none) or a number of stages, got {frozen_stages}"
        )
    if frozen_stages == FREEZE_ALL:
        freeze_modules([module])
    elif frozen_stages > 0:
        stages = getattr(module, "stages", None)
        if stages is None:
            raise ValueError(
                f"{type(module).__name__} has no stages to freeze; use frozen_stages=-1 (all) "
                "or 0 (none)"
            )
        stages = list(stages())
        if frozen_stages > len(stages):
            raise ValueError(
                f"{type(module).__name__} has {len(stages)} stages, cannot freeze "
                f"{frozen_stages}; use at most {len(stages)}, or -1 for all"
            )
        freeze_modules([part for stage in stages[:frozen_stages] for part in stage])
    if freeze_bn:
        freeze_modules([module], norms_only=True)
