"""The quantized linear product as torch.library custom operators, for torch.compile (PyTorch
2.4 and later; elsewhere the layer runs through _function.LinearFunction only).

Dynamo cannot trace an autograd.Function that keeps an opaque saved object, so here both
directions are pure functions of tensors: the backward recomputes what the forward saved
(the C interface does so bitwise, from x, the weight and the call number), and the call number
travels as a CPU int64 tensor so that a new step does not specialise a new graph. A layer is
named by an integer handle that maps to its C layer in a registry; the registry holds the C
layers weakly (the modules own them).
"""

import itertools
import threading
import weakref
from typing import Tuple

import torch

from quartet.torch import _function

_handles = weakref.WeakValueDictionary()  # int -> _capi.Linear
_next_handle = itertools.count(1)
_lock = threading.Lock()
registration_error = None  # why the operators could not be registered, if they could not


_SUPPORTED = hasattr(torch.library, "custom_op") and hasattr(getattr(torch, "compiler", None), "is_compiling")


def supported():
    """Whether this PyTorch has what the compiled path needs."""
    return _SUPPORTED


def is_compiling():
    return _SUPPORTED and torch.compiler.is_compiling()


def register(layer):
    """A handle for a C layer (an _capi.Linear), valid while the layer lives."""
    with _lock:
        handle = next(_next_handle)
        _handles[handle] = layer
    return handle


def _layer(handle):
    layer = _handles.get(handle)
    if layer is None:
        raise RuntimeError(f"quartet: linear layer handle {handle} is no longer registered (its module was freed)")
    return layer


def forward_impl(x, weight, handle, call):
    """The forward operator's work: y = x weight^T for the layer `handle`, call number `call`."""
    y, _ = _function.forward(_layer(handle), _function.prepared(x), _function.prepared(weight), int(call), save=False)
    return y


def backward_impl(x, weight, dy, handle, call):
    """The backward operator's work: (dx, dw), recomputing what the forward saved."""
    return _function.backward(_layer(handle), None, _function.prepared(x), _function.prepared(weight),
                              _function.prepared(dy), int(call))


def _register_operators():
    # The forward also returns its call number, which the backward reads from there: saved as
    # an output of this opaque operator it cannot be recomputed in the backward graph from the
    # layer's counter, which the forward's caller advances in place.
    @torch.library.custom_op("quartet::linear_forward", mutates_args=())
    def linear_forward(x: torch.Tensor, weight: torch.Tensor, handle: int,
                       call: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return forward_impl(x, weight, handle, call), call.clone()

    @linear_forward.register_fake
    def _(x, weight, handle, call):
        return x.new_empty((x.shape[0], weight.shape[0])), torch.empty_like(call)

    @torch.library.custom_op("quartet::linear_backward", mutates_args=())
    def linear_backward(x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor, handle: int,
                        call: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return backward_impl(x, weight, dy, handle, call)

    @linear_backward.register_fake
    def _(x, weight, dy, handle, call):
        return x.new_empty(x.shape), weight.new_empty(weight.shape)

    def setup_context(ctx, inputs, output):
        x, weight, handle, _ = inputs
        ctx.save_for_backward(x, weight, output[1])
        ctx.handle = handle
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, dy, _):
        x, weight, call = ctx.saved_tensors
        dx, dw = linear_backward(x, weight, dy, ctx.handle, call)
        return dx, dw, None, None

    linear_forward.register_autograd(backward, setup_context=setup_context)


if supported():
    try:
        _register_operators()
    except Exception as e:  # noqa: BLE001 - reported when a compiled model first needs them
        registration_error = e


def linear(x2d, weight, handle, call):
    """y = x2d weight^T through the custom operator (call: an int64 tensor holding the call number)."""
    if registration_error is not None:
        raise RuntimeError(f"quartet: the torch.compile operators could not be registered: {registration_error}")
    return torch.ops.quartet.linear_forward(x2d, weight, handle, call)[0]
