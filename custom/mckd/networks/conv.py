"""CPU kernels for the networks' convolutions: oneDNN for 3D convolutions, a matrix product for small upsamplings.

PyTorch picks the CPU kernel with a heuristic written for 2D images: a convolution with batch size 1, a kernel
of at most 3 and ``N * C * D * H <= 20480`` goes to the slow im2col kernel (``slow_conv3d``). That is exactly what
a multi-modal network meets when one modality is available (encoder batch 1) and in every decoder at batch 1; on
two threads a 16-channel 3x3x3 convolution at 32^3 measured about 7x slower there than with oneDNN. MONAI's blocks
build plain ``nn.Conv3d``, so :func:`use_onednn_conv3d` re-classes them in place: the subclass only changes
which kernel computes the same convolution (forward and gradients agree with ``nn.Conv3d`` to float rounding).
1x1x1 kernels keep PyTorch's choice (a plain matrix product, faster than oneDNN for few channels), as do other
devices and dtypes (CUDA, autocast bfloat16/float16) and
``torch.compile``, which chooses its own kernels.

The decoders upsample with transposed convolutions whose kernel equals their stride (2x2x2, stride 2). On the CPU
PyTorch computes one matrix product per sample whose inner size is the number of input voxels; at the bottleneck of
``resnet50_aspp`` (8 voxels, 1024 -> 256 channels, batch 1 in every decoder) it takes a slow path: 15-22 ms on one or
two threads, a fifth of a whole one-modality window, for 34 MFLOP. With kernel == stride the output blocks do not
overlap, so the layer is the product ``[voxels, C_in] x [C_in, C_out * k]`` followed by a reshuffle of the ``k``
kernel offsets into the output grid: 0.7-0.9 ms there. :class:`BlockTransposedConv3d` takes that form on the CPU
when the weight has more elements than the output (the reshuffle is then cheap; on larger outputs PyTorch's kernel
is as fast or faster). The same sums in another order: equal to float rounding; gradients through autograd.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OneDNNConv3d", "BlockTransposedConv3d", "use_onednn_conv3d"]


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

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
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


class BlockTransposedConv3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with kernel == stride (no padding, dilation or groups): a matrix product on the CPU when
    the weight outnumbers the output (see the module docstring). Constructor arguments are those of the parent."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        compiling = False if torch.jit.is_scripting() else torch.compiler.is_compiling()
        n, c_in, d, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        c_out, k = self.weight.shape[1], self.kernel_size
        out_numel = x.numel() // c_in * c_out * k[0] * k[1] * k[2]
        if output_size is not None or compiling or x.device.type != "cpu" or self.weight.numel() <= out_numel:
            extra = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 3, self.dilation)
            return F.conv_transpose3d(
                x, self.weight, self.bias, self.stride, self.padding, extra, self.groups, self.dilation
            )
        columns = torch.matmul(x.reshape(n, c_in, d * h * w).transpose(1, 2), self.weight.reshape(c_in, -1))
        y = columns.reshape(n, d, h, w, c_out, k[0], k[1], k[2]).permute(0, 4, 1, 5, 2, 6, 3, 7)
        y = y.reshape(n, c_out, d * k[0], h * k[1], w * k[2])
        bias = self.bias
        return y if bias is None else y + bias.reshape(1, -1, 1, 1, 1)


def _is_block_transposed(conv: nn.ConvTranspose3d) -> bool:
    return (
        tuple(conv.kernel_size) == tuple(conv.stride)
        and tuple(conv.padding) == (0, 0, 0)
        and tuple(conv.output_padding) == (0, 0, 0)
        and tuple(conv.dilation) == (1, 1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def use_onednn_conv3d(module: nn.Module) -> nn.Module:
    """Re-class the convolutions inside ``module`` for this module's CPU kernels (parameters untouched).

    Every plain ``nn.Conv3d`` becomes :class:`OneDNNConv3d` (not those with non-zero padding modes or string padding),
    every plain ``nn.ConvTranspose3d`` with kernel == stride :class:`BlockTransposedConv3d`.

    Returns:
        ``module`` itself.
    """
    for m in module.modules():
        if type(m) is nn.Conv3d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            m.__class__ = OneDNNConv3d
            m.use_onednn = _wants_onednn(m)
        elif type(m) is nn.ConvTranspose3d and _is_block_transposed(m):
            m.__class__ = BlockTransposedConv3d
    return module
