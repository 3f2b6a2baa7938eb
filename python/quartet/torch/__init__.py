"""Quartet's quantized linear layers for PyTorch.

    import quartet.torch as qt
    layer = qt.Linear(1024, 4096, recipe="quartet2")   # a drop-in nn.Linear
    qt.convert(model, recipe="quartet2")                # or convert a model's nn.Linear layers

CPU tensors run on Quartet's CPU backend, CUDA tensors on its CUDA kernels; both give the bits
quartet's own trainer gives. See docs/pytorch.md.
"""

from quartet._capi import QuartetArgumentError, QuartetError, QuartetNonFiniteError
from quartet.torch.convert import convert
from quartet.torch.linear import Linear
from quartet.torch.random import initial_seed, manual_seed

__all__ = [
    "Linear",
    "convert",
    "manual_seed",
    "initial_seed",
    "check_errors",
    "QuartetError",
    "QuartetArgumentError",
    "QuartetNonFiniteError",
]


def check_errors(device):
    """Waits for a device's queued quantized work and raises what it found (a GPU records a
    non-finite quantizer input instead of stopping; the CPU raises at once)."""
    import torch

    from quartet.torch.linear import _context_of

    _context_of(torch.device(device)).check_errors()
