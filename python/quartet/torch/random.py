"""Where the layers' random bits come from, reproducibly.

Each layer owns a block of Philox streams chosen by (seed, layer index) and numbers its
forward/backward calls: a call draws fresh bits, and the same seed, layer index and call
number draw the same bits as quartet's own trainer does (include/quartet/nn/linear.h).

A layer created without an explicit seed takes the default seed; without an explicit layer
index, the next index of a process-wide counter. `manual_seed` sets the default seed and
restarts the counter, so a program that builds its model the same way after the same
`manual_seed` gets the same streams.
"""

import threading

_UINT64_MAX = 2**64 - 1
_UINT32_MAX = 2**32 - 1

_lock = threading.Lock()
_default_seed = 0
_next_layer = 0


def check_seed(seed, what="seed"):
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{what}: expected an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= _UINT64_MAX:
        raise ValueError(f"{what}: expected an integer in [0, 2^64), got {seed}")
    return seed


def check_layer(layer, what="layer"):
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"{what}: expected an int, got {type(layer).__name__} {layer!r}")
    if not 0 <= layer <= _UINT32_MAX:
        raise ValueError(f"{what}: expected an integer in [0, 2^32), got {layer}")
    return layer


def manual_seed(seed):
    """Sets the default seed of layers created from now on and restarts their layer numbering."""
    global _default_seed, _next_layer
    check_seed(seed)
    with _lock:
        _default_seed = seed
        _next_layer = 0


def initial_seed():
    """The default seed of layers created from now on."""
    return _default_seed


def reserve_layer_indices(count):
    """The first of `count` new consecutive layer indices (0, 1, 2, ... since the last manual_seed)."""
    global _next_layer
    with _lock:
        first = _next_layer
        check_layer(first + max(count, 1) - 1, "layer index (too many layers since the last manual_seed)")
        _next_layer += count
    return first


def next_layer_index():
    """A new layer index."""
    return reserve_layer_indices(1)
