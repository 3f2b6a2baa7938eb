"""The quantized linear product as an autograd Function over the C interface.

PyTorch tensors are handed to libquartet_c as raw pointers: contiguous, of the dtype the C
interface takes (activations FP32 or BF16, the master weight FP32), on the layer's device, and
for CUDA on the current stream. The forward's saved object lives in the autograd context, so
several forwards may run before their backwards (gradient accumulation, checkpointing).
"""

import torch

from quartet import _capi

_DTYPES = {torch.float32: _capi.DTYPE_FLOAT32, torch.bfloat16: _capi.DTYPE_BFLOAT16}

# CUDA kernels read rows with 16-byte vector loads; a view that starts mid-row is copied.
_CUDA_ALIGNMENT = 16


def activation_dtype(dtype, what):
    if dtype not in _DTYPES:
        raise TypeError(f"{what}: expected torch.float32 or torch.bfloat16, got {dtype}")
    return _DTYPES[dtype]


# The raw handle without building a torch.cuda.Stream object: every call passes through here.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def stream_of(device):
    """The caller's current CUDA stream as the C interface takes it (None on the CPU)."""
    if device.type != "cuda":
        return None
    if _raw_stream is not None:
        return _raw_stream(device.index if device.index is not None else torch.cuda.current_device()) or None
    return torch.cuda.current_stream(device).cuda_stream or None


def prepared(t):
    """`t` as a dense buffer the C interface may read."""
    t = t.contiguous()
    if t.device.type == "cuda" and t.data_ptr() % _CUDA_ALIGNMENT != 0:
        t = t.clone()
    return t


def forward(layer, x2d, weight, call, save):
    """y = x2d weight^T through `layer` (an _capi.Linear); returns (y, saved or None)."""
    y = torch.empty((x2d.shape[0], weight.shape[0]), dtype=x2d.dtype, device=x2d.device)
    saved = layer.forward(
        x2d.data_ptr(), _DTYPES[x2d.dtype], x2d.shape[0], weight.data_ptr(), y.data_ptr(), call,
        stream_of(x2d.device), save=save,
    )
    return y, saved


def backward(layer, saved, x2d, weight, dy, call):
    """(dx, dw) of the product; `saved` None recomputes the forward's saved state."""
    dx = torch.empty(x2d.shape, dtype=x2d.dtype, device=x2d.device)
    dw = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    layer.backward(
        saved, x2d.data_ptr(), weight.data_ptr(), dy.data_ptr(), _DTYPES[x2d.dtype], x2d.shape[0], dx.data_ptr(),
        dw.data_ptr(), call, accumulate_dw=False, stream=stream_of(x2d.device),
    )
    return dx, dw


class LinearFunction(torch.autograd.Function):
    """y = x weight^T with the layer's recipe in both directions (x 2-D, weight FP32)."""

    @staticmethod
    def forward(ctx, x2d, weight, layer, call):
        x2d, weight = prepared(x2d), prepared(weight)
        y, saved = forward(layer, x2d, weight, call, save=True)
        ctx.save_for_backward(x2d, weight)
        ctx.layer, ctx.saved, ctx.call = layer, saved, call
        return y

    @staticmethod
    def backward(ctx, dy):
        x2d, weight = ctx.saved_tensors
        # Autograd hands dy over in y's dtype, which is x2d's.
        dx, dw = backward(ctx.layer, ctx.saved, x2d, weight, prepared(dy), ctx.call)
        return (dx if ctx.needs_input_grad[0] else None, dw if ctx.needs_input_grad[1] else None, None, None)
