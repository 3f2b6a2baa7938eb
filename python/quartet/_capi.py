"""ctypes bindings of the C interface, include/quartet/c_api.h (libquartet_c.so).

Nothing here depends on PyTorch: handles take raw pointers, so the same code serves any tensor
library. The library is looked for, in this order:

1. the file named by the environment variable QUARTET_C_LIBRARY (an error if it is missing);
2. ``_lib/libquartet_c.so`` inside this package (a copy placed there before installing);
3. when the package runs from a source checkout (python/quartet), the checkout's build
   folders: build/release, build/cpu, then any other build/*/ in name order.
"""

import ctypes
import os
import pathlib
import threading

C_API_VERSION = 1  # QUARTET_C_API_VERSION of the header these bindings were written for
LIBRARY_ENV = "QUARTET_C_LIBRARY"
LIBRARY_FILE = "libquartet_c.so"

# quartet_status
OK, INVALID_ARGUMENT, UNSUPPORTED, NON_FINITE, OUT_OF_MEMORY, FAILED = range(6)
# quartet_device_type
DEVICE_CPU, DEVICE_CUDA = 0, 1
# quartet_dtype
DTYPE_FLOAT32, DTYPE_BFLOAT16 = 0, 1

_STATUS_NAMES = {
    INVALID_ARGUMENT: "invalid argument",
    UNSUPPORTED: "unsupported",
    NON_FINITE: "non-finite input",
    OUT_OF_MEMORY: "out of memory",
    FAILED: "failed",
}


class QuartetError(RuntimeError):
    """An error reported by libquartet_c: `status` is the C status code."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class QuartetArgumentError(QuartetError, ValueError):
    """A bad argument (shape, option, dtype, ...), detected before anything ran."""


class QuartetNonFiniteError(QuartetError, FloatingPointError):
    """A quantizer met a NaN or an infinity (a diverging step, in training)."""


def _error(status, message):
    if status == INVALID_ARGUMENT:
        return QuartetArgumentError(status, message)
    if status == NON_FINITE:
        return QuartetNonFiniteError(status, message)
    return QuartetError(status, message or _STATUS_NAMES.get(status, f"status {status}"))


def _candidates():
    """The paths tried, in order, as (path, why) pairs."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return [(pathlib.Path(env), f"${LIBRARY_ENV}")]
    package = pathlib.Path(__file__).resolve().parent
    found = [(package / "_lib" / LIBRARY_FILE, "next to the package")]
    checkout = package.parent.parent
    if (package.parent / "pyproject.toml").is_file() and (checkout / "include" / "quartet" / "c_api.h").is_file():
        build = checkout / "build"
        preferred = [build / "release", build / "cpu"]
        others = sorted(p for p in build.glob("*") if p.is_dir() and p not in preferred) if build.is_dir() else []
        found += [(folder / LIBRARY_FILE, "the source checkout's build folder") for folder in preferred + others]
    return found


class _Library:
    """libquartet_c with its function signatures declared."""

    def __init__(self):
        tried = []
        for path, why in _candidates():
            if path.is_file():
                self.path = path
                break
            tried.append(f"{path} ({why})")
        else:
            if os.environ.get(LIBRARY_ENV):
                raise OSError(f"${LIBRARY_ENV} names {os.environ[LIBRARY_ENV]}, which does not exist")
            raise OSError(
                f"{LIBRARY_FILE} not found; build it (ninja -C build/<preset> quartet_c) and set ${LIBRARY_ENV} "
                f"to its path. Tried: " + "; ".join(tried)
            )
        self.lib = ctypes.CDLL(str(self.path))
        self._declare()
        version = self.lib.quartet_c_api_version()
        if version != C_API_VERSION:
            raise OSError(f"{self.path} has C interface version {version}; this package needs {C_API_VERSION}")

    def _declare(self):
        L = self.lib
        vp, i32, i64, u32, u64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint64
        cstr, pp = ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)
        signatures = {
            "quartet_c_api_version": (i32, []),
            "quartet_version": (cstr, []),
            "quartet_last_error": (cstr, []),
            "quartet_cuda_built": (i32, []),
            "quartet_recipe_count": (i32, []),
            "quartet_recipe_name": (cstr, [i32]),
            "quartet_context_create": (i32, [i32, i32, pp]),
            "quartet_context_destroy": (None, [vp]),
            "quartet_context_check_errors": (i32, [vp]),
            "quartet_linear_create": (
                i32,
                [vp, cstr, ctypes.POINTER(cstr), ctypes.POINTER(cstr), i32, i64, i64, u64, u32, pp],
            ),
            "quartet_linear_destroy": (None, [vp]),
            "quartet_linear_describe": (cstr, [vp]),
            "quartet_linear_token_multiple": (i64, [vp]),
            "quartet_linear_forward": (i32, [vp, vp, i32, i64, vp, vp, u32, vp, pp]),
            "quartet_linear_backward": (i32, [vp, vp, vp, vp, vp, i32, i64, vp, vp, i32, u32, vp]),
            "quartet_linear_saved_destroy": (None, [vp]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(L, name)
            function.restype = restype
            function.argtypes = argtypes

    def check(self, status):
        """Raises the error a failed call left (the message is per thread, as is this call)."""
        if status != OK:
            raise _error(status, self.lib.quartet_last_error().decode())

    def version(self):
        return self.lib.quartet_version().decode()

    def cuda_built(self):
        return bool(self.lib.quartet_cuda_built())

    def recipes(self):
        return [self.lib.quartet_recipe_name(i).decode() for i in range(self.lib.quartet_recipe_count())]


_library = None
_library_lock = threading.Lock()


def library():
    """The loaded libquartet_c (loaded on first use)."""
    global _library
    with _library_lock:
        if _library is None:
            _library = _Library()
        return _library


class Context:
    """A backend on one device (QUARTET_DEVICE_CPU index 0, or a CUDA ordinal)."""

    def __init__(self, device_type, index):
        self._lib = library()
        handle = ctypes.c_void_p()
        self._lib.check(self._lib.lib.quartet_context_create(device_type, index, ctypes.byref(handle)))
        self.handle = handle
        self.device_type = device_type
        self.index = index

    def check_errors(self):
        self._lib.check(self._lib.lib.quartet_context_check_errors(self.handle))

    def __del__(self):
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            self._lib.lib.quartet_context_destroy(handle)


_contexts = {}
_contexts_lock = threading.Lock()


def context(device_type, index):
    """The one context of a device in this process."""
    with _contexts_lock:
        key = (device_type, index)
        if key not in _contexts:
            _contexts[key] = Context(device_type, index)
        return _contexts[key]


def option_strings(options):
    """Recipe options as the (names, values) strings the C interface parses."""
    names, values = [], []
    for name, value in options.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            text = repr(value)
        elif isinstance(value, str):
            text = value
        else:
            raise TypeError(
                f"recipe option {name}: expected a bool, int, float or str, got {type(value).__name__} {value!r}"
            )
        names.append(name)
        values.append(text)
    return names, values


class Saved:
    """What one forward call keeps for its backward (freed with this object)."""

    def __init__(self, layer, handle, call, tokens):
        self._layer = layer  # keeps the library loaded while this object lives
        self.handle = handle
        self.call = call
        self.tokens = tokens

    def __del__(self):
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            self._layer._lib.lib.quartet_linear_saved_destroy(handle)


class Linear:
    """One quantized linear layer of the C interface: raw pointers in, raw pointers out."""

    def __init__(self, ctx, recipe, options, in_features, out_features, seed, layer):
        self._lib = library()
        self.context = ctx  # the C layer keeps its backend alive; this keeps the Python object
        names, values = option_strings(options)
        c_names = (ctypes.c_char_p * max(len(names), 1))(*[n.encode() for n in names])
        c_values = (ctypes.c_char_p * max(len(values), 1))(*[v.encode() for v in values])
        handle = ctypes.c_void_p()
        self._lib.check(
            self._lib.lib.quartet_linear_create(
                ctx.handle, recipe.encode(), c_names, c_values, len(names), in_features, out_features,
                seed, layer, ctypes.byref(handle),
            )
        )
        self.handle = handle
        self.in_features, self.out_features = in_features, out_features

    def describe(self):
        return self._lib.lib.quartet_linear_describe(self.handle).decode()

    def token_multiple(self):
        return self._lib.lib.quartet_linear_token_multiple(self.handle)

    def forward(self, x, dtype, tokens, w, y, call, stream=None, save=True):
        """y = x w^T; returns a Saved for the backward when `save`."""
        saved = ctypes.c_void_p()
        self._lib.check(
            self._lib.lib.quartet_linear_forward(
                self.handle, x, dtype, tokens, w, y, call, stream, ctypes.byref(saved) if save else None
            )
        )
        return Saved(self, saved, call, tokens) if save else None

    def backward(self, saved, x, w, dy, dtype, tokens, dx, dw, call, accumulate_dw=False, stream=None):
        """dx = dy w; dw = dy^T x (added to dw when accumulate_dw). `saved` None recomputes it."""
        self._lib.check(
            self._lib.lib.quartet_linear_backward(
                self.handle, saved.handle if saved is not None else None, x, w, dy, dtype, tokens, dx, dw,
                1 if accumulate_dw else 0, call, stream,
            )
        )

    def __del__(self):
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            self._lib.lib.quartet_linear_destroy(handle)
