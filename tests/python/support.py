"""What the Python tests share: the devices to run on, and the C interface called directly (the
oracle the PyTorch module is compared with, bit for bit)."""

import torch

import quartet
from quartet import _capi


def devices():
    """"cpu", and "cuda" where this build has the CUDA backend and PyTorch sees a GPU."""
    found = ["cpu"]
    if torch.cuda.is_available() and quartet.library().cuda_built():
        found.append("cuda")
    return found


_DTYPES = {torch.float32: _capi.DTYPE_FLOAT32, torch.bfloat16: _capi.DTYPE_BFLOAT16}


def direct(recipe, options, x2d, w, dy, seed, layer, call, accumulate_into=None):
    """(y, dx, dw) of quartet_linear_forward / _backward on fresh dense copies of the inputs,
    without quartet.torch."""
    device = x2d.device
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        ctx = _capi.context(_capi.DEVICE_CUDA, index)
    else:
        ctx = _capi.context(_capi.DEVICE_CPU, 0)
    tokens, k = x2d.shape
    n = w.shape[0]
    layer_handle = _capi.Linear(ctx, recipe, options, k, n, seed, layer)
    x = x2d.detach().clone().contiguous()
    wc = w.detach().to(torch.float32).clone().contiguous()
    g = dy.detach().to(x.dtype).clone().contiguous()
    y = torch.full((tokens, n), float("nan"), dtype=x.dtype, device=device)
    dx = torch.full_like(x, float("nan"))
    dw = torch.full_like(wc, float("nan")) if accumulate_into is None else accumulate_into.detach().clone()
    saved = layer_handle.forward(x.data_ptr(), _DTYPES[x.dtype], tokens, wc.data_ptr(), y.data_ptr(), call)
    layer_handle.backward(saved, x.data_ptr(), wc.data_ptr(), g.data_ptr(), _DTYPES[x.dtype], tokens, dx.data_ptr(),
                          dw.data_ptr(), call, accumulate_dw=accumulate_into is not None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return y, dx, dw


def bits_equal(a, b):
    """Whether two tensors hold the same bits (NaNs included), dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    view = torch.int16 if a.dtype == torch.bfloat16 else torch.int32
    return torch.equal(a.detach().cpu().contiguous().view(view), b.detach().cpu().contiguous().view(view))
