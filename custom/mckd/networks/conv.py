"""3D convolution that always takes PyTorch's oneDNN (mkldnn) kernel for float32 CPU inputs.

PyTorch picks the CPU kernel with a heuristic written for 2D images: a convolution with batch size 1, a kernel
of at most 3 and ``N * C * D * H <= 20480`` goes to the slow im2col kernel (``slow_conv3d``). That is exactly what
a multi-modal network meets when one modality is available (encoder batch 1) and in every decoder at batch 1; on
two threads a 16-channel 3x3x3 convolution at 32^3 measured about 7x slower there than with oneDNN. MONAI's blocks
build plain ``nn.Conv3d``, so :func:`use_onednn_conv3d` re-classes them in place: the subclass only changes
which kernel computes the same convolution (forward and gradients agree with ``nn.Conv3d`` to float rounding).
1x1x1 kernels keep PyTorch's choice (a plain matrix product, faster than oneDNN for few channels), as do other
devices and dtypes (CUDA, autocast bfloat16/float16) and
``torch.compile``, which chooses its own kernels.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OneDNNConv3d", "use_onednn_conv3d"]


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` (zero padding only) that runs float32 CPU inputs through oneDNN regardless of the batch size.

    Constructor arguments are those of ``nn.Conv3d``; ``use_onednn`` is ``False`` for 1x1x1 kernels and where this
    PyTorch build has no oneDNN.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.use_onednn: bool = _wants_onednn(self)

    def kernel(self) -> torch.Tensor:
        """The kernel that convolves the input (the weight itself; subclasses may transform it)."""
        return self.weight

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if not torch.jit.is_scripting() and torch.compiler.is_compiling():
            # torch.compile traces with fake tensors, which the direct oneDNN call does not accept
            return F.conv3d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.use_onednn and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32:
            return torch.mkldnn_convolution(
                x.contiguous(),
                weight.contiguous(),
                bias,
                [self.padding[0], self.padding[1], self.padding[2]],
                [self.stride[0], self.stride[1], self.stride[2]],
                [self.dilation[0], self.dilation[1], self.dilation[2]],
                self.groups,
            )
        return F.conv3d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def _wants_onednn(conv: nn.Conv3d) -> bool:
    return torch.backends.mkldnn.is_available() and tuple(conv.kernel_size) != (1, 1, 1)


def use_onednn_conv3d(module: nn.Module) -> nn.Module:
    """Re-class every plain ``nn.Conv3d`` inside ``module`` as :class:`OneDNNConv3d` (parameters untouched).

    Convolutions with non-zero padding modes or string padding are left as they are.

    Returns:
        ``module`` itself.
    """
    for m in module.modules():
        if type(m) is nn.Conv3d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            m.__class__ = OneDNNConv3d
            m.use_onednn = _wants_onednn(m)
    return module
