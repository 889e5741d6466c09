"""Weight-standardised 3D convolution, as used throughout the published MCKD ResNet-50 backbone.

MONAI's convolution blocks have no weight standardisation, so this small layer is written here: every forward pass
uses the kernel with each output channel's weights shifted to zero mean and scaled to unit (unbiased) variance.
"""

from __future__ import annotations

import torch

from mckd.networks.conv import OneDNNConv3d

__all__ = ["WeightStandardizedConv3d"]


class WeightStandardizedConv3d(OneDNNConv3d):
    """``nn.Conv3d`` whose kernel is standardised per output channel before each use.

    The stored parameter stays unconstrained; ``(w - mean(w)) / sqrt(var(w) + eps)`` over each output channel's
    ``in_channels * prod(kernel_size)`` weights is what convolves the input. Constructor arguments are those of
    ``nn.Conv3d`` (``bias`` defaults to ``False`` here, as in the published code), plus ``ws_eps``. On float32 CPU
    inputs the oneDNN kernel is used (:class:`~mckd.networks.conv.OneDNNConv3d`).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size.
        stride: stride. Default 1.
        padding: zero padding. Default 0.
        dilation: dilation. Default 1.
        groups: groups. Default 1.
        bias: add a learnable bias. Default ``False``.
        ws_eps: added to the per-channel weight variance before the square root. Default 1e-12 (published value).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
        dilation: int | tuple[int, int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        ws_eps: float = 1e-12,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.ws_eps = ws_eps

    def kernel(self) -> torch.Tensor:
        """The standardised kernel: per output channel zero mean and unit (unbiased) variance."""
        flat = self.weight.reshape(self.weight.shape[0], -1)
        flat = (flat - flat.mean(dim=1, keepdim=True)) / torch.sqrt(flat.var(dim=1, keepdim=True) + self.ws_eps)
        return flat.reshape_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.kernel(), self.bias)
