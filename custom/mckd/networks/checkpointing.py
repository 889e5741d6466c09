"""Activation checkpointing of encoder blocks: trade a second forward pass for the memory of their activations.

:func:`checkpoint_blocks` makes each given block run through ``torch.utils.checkpoint`` (non-reentrant) while
autograd records a graph: only the block's input is kept for the backward pass, and the block's forward is
recomputed there. Without a graph (inference, ``torch.no_grad``) the block runs as before. The blocks' parameters,
their names in the state dict and the computed values are unchanged (no dropout or running statistics inside,
so the recomputation gives the same activations and gradients), so a model trained with checkpointing loads into one
built without it. The option sets each block instance's ``forward``; :func:`remove_checkpointing` takes it away
again (TorchScript needs the class's own ``forward``, and a scripted model is for inference anyway).
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_blocks", "remove_checkpointing"]


def _checkpointed(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled():
        return checkpoint(forward, x, use_reentrant=False)
    return forward(x)


def checkpoint_blocks(blocks: Iterable[nn.Module]) -> int:
    """Run each block's forward under activation checkpointing when gradients are recorded.

    Args:
        blocks: modules with a single-tensor ``forward``; each must not contain another of them.

    Returns:
        The number of blocks changed.
    """
    count = 0
    for block in blocks:
        original = type(block).forward.__get__(block)
        block.forward = functools.partial(_checkpointed, original)  # type: ignore[method-assign]
        count += 1
    return count


def remove_checkpointing(blocks: Iterable[nn.Module]) -> None:
    """Undo :func:`checkpoint_blocks` for ``blocks`` (blocks without it are left as they are)."""
    for block in blocks:
        block.__dict__.pop("forward", None)
