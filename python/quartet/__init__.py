"""Quartet: 4-bit (NVFP4/MXFP4) quantized training.

`quartet.torch` has the PyTorch layer (`quartet.torch.Linear`, `quartet.torch.convert`);
`quartet.library()` the C library it runs on.
"""

from quartet._capi import QuartetError, library

__version__ = "0.1.0"
__all__ = ["QuartetError", "library", "__version__"]
