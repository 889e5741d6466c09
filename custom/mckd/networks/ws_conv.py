"""Weight-standardised 3D convolution, as used throughout the published MCKD ResNet-50 backbone.

MONAI's convolution blocks have no weight standardisation, so this small layer is written here: every forward pass
uses the kernel with each output channel's weights shifted to zero mean and scaled to unit (unbiased) variance.

Standardising the 43.7 M weights of ``resnet50_aspp`` takes several passes over them: on two CPU threads about a
quarter of a 32 x 64 x 64 inference forward with all four modalities, and, being independent of the input, a larger
share the fewer modalities are encoded. Sliding-window inference repeats it for every window with the same weights.
So when no gradient is recorded (``torch.no_grad``, ``torch.inference_mode``), the standardised kernel is kept and
reused until the weight changes: a new version of it (any in-place update that autograd sees: optimiser steps,
``load_state_dict``, ``copy_``), other storage, dtype, shape or device. The kept kernel is the same computation's
result, so outputs are bit for bit those without it. Forwards that record gradients (training, the meta-update)
standardise afresh and drop the kept kernel, so it never costs memory during training. In-place edits through ``.data``
bypass the version counter; call :meth:`WeightStandardizedConv3d.forget_kernel` after such an edit.
"""

from __future__ import annotations

import torch

from mckd.networks.conv import OneDNNConv3d

__all__ = ["WeightStandardizedConv3d"]


class WeightStandardizedConv3d(OneDNNConv3d):
    """``nn.Conv3d`` whose kernel is standardised per output channel before each use (kept while the weight is unchanged
    and no gradient flows to it; see the module docstring).

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
        self._kept: tuple[torch.Tensor, int, float, torch.Tensor] | None = None

    #: TorchScript compiles ``kernel`` without the kept kernel (a scripted model standardises on every call).
    __jit_ignored_attributes__ = ["_kept"]

    def standardize(self) -> torch.Tensor:
        """The standardised weight: per output channel zero mean and unit (unbiased) variance."""
        flat = self.weight.reshape(self.weight.shape[0], -1)
        flat = (flat - flat.mean(dim=1, keepdim=True)) / torch.sqrt(flat.var(dim=1, keepdim=True) + self.ws_eps)
        return flat.reshape_as(self.weight)

    def kernel(self) -> torch.Tensor:
        """The standardised kernel that convolves the input: kept from an earlier call when still valid."""
        if torch.jit.is_scripting():
            return self.standardize()
        if torch.compiler.is_compiling():
            return self.standardize()
        if torch.is_grad_enabled():
            self._kept = None
            return self.standardize()
        return self._kept_kernel()

    @torch.jit.unused
    def _kept_kernel(self) -> torch.Tensor:
        weight = self.weight
        kept = self._kept
        if kept is not None:
            source, version, eps, standardized = kept
            if (
                source.data_ptr() == weight.data_ptr()
                and version == weight._version
                and eps == self.ws_eps
                and source.dtype == weight.dtype
                and source.device == weight.device
                and source.shape == weight.shape
            ):
                return standardized
        standardized = self.standardize()
        # the detached view keeps the source storage alive, so its address cannot be reused by another tensor
        self._kept = (weight.detach(), weight._version, self.ws_eps, standardized)
        return standardized

    @torch.jit.unused
    def forget_kernel(self) -> None:
        """Drop the kept kernel (after editing the weight in place through ``.data``)."""
        self._kept = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.kernel(), self.bias)
