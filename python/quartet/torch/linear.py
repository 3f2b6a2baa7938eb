"""quartet.torch.Linear: a drop-in torch.nn.Linear whose products run a Quartet recipe."""


import torch

from quartet import _capi
from quartet.torch import _compiled, _function, random


def _autocast_dtype_by_device(device_type):  # PyTorch 2.4 and later
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _autocast_dtype_before_2_4(device_type):
    if device_type == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None


# The dtype autocast casts a linear layer's input to on a device type, or None when off; chosen
# once, as every forward asks.
_autocast_dtype = _autocast_dtype_by_device if hasattr(torch, "get_autocast_dtype") else _autocast_dtype_before_2_4


def _context_of(device):
    if device.type == "cpu":
        return _capi.context(_capi.DEVICE_CPU, 0)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return _capi.context(_capi.DEVICE_CUDA, index)
    raise ValueError(f"quartet.torch.Linear runs on CPU and CUDA tensors, not on device {device}")


class Linear(torch.nn.Linear):
    """y = x W^T (+ bias) with the products of a Quartet recipe ("bf16", "nvidia", "nvidia+4/6",
    "tetrajet2", "quartet2", "quartet1", "quartet1-sr"; docs/recipes.md) in the forward and the
    backward pass.

    The weight is the FP32 master weight (an nn.Parameter, as in nn.Linear); inputs are FP32 or
    BF16 (BF16 autocast casts them), and the output has the input's dtype. `options` are the
    recipe's ablation switches: quantize_forward, quantize_backward, four_over_six,
    backward_rotation, eden_group, forward_clip, backward_headroom, backward_clip,
    backward_quantizer. `seed` and `layer` choose the layer's random streams (quartet.torch.random
    gives the defaults); each training forward takes the next call number, so every step draws
    fresh bits, reproducibly.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, recipe="quartet2",
                 seed=None, layer=None, **options):
        if dtype is not None and dtype != torch.float32:
            raise TypeError(f"quartet.torch.Linear keeps an FP32 master weight: dtype must be torch.float32, got {dtype}")
        if not isinstance(recipe, str):
            raise TypeError(f"recipe: expected a recipe name (str), got {type(recipe).__name__} {recipe!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=torch.float32)
        self.recipe = recipe
        self.options = dict(options)
        self.seed = random.check_seed(seed) if seed is not None else random.initial_seed()
        self.layer = random.check_layer(layer) if layer is not None else random.next_layer_index()
        # The call number of the next training forward, in a CPU tensor so that a compiled
        # model counts without specialising a graph per step (and .to() leaves it on the host).
        self._calls = torch.zeros((), dtype=torch.int64)
        self._layers = {}  # torch.device -> _capi.Linear
        # Checks the recipe, its options and the shape now rather than at the first forward.
        self._prepare_weight_device()

    @property
    def call(self):
        """The call number the next training forward takes."""
        return int(self._calls)

    @call.setter
    def call(self, value):
        self._calls.fill_(random.check_layer(value, "call"))

    def _layer_on(self, device):
        if device not in self._layers:
            layer = _capi.Linear(
                _context_of(device), self.recipe, self.options, self.in_features, self.out_features, self.seed, self.layer
            )
            layer.compiled_handle = _compiled.register(layer) if _compiled.supported() else None
            self._layers[device] = layer
        return self._layers[device]

    def _prepare_weight_device(self):
        """Makes the C layer of the weight's device, which a compiled forward cannot make."""
        device = self.weight.device if self.weight.device.type in ("cpu", "cuda") else torch.device("cpu")
        layer = self._layer_on(device)
        self._token_multiple = layer.token_multiple()
        self._compiled_handle = layer.compiled_handle

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        if self.weight.device.type in ("cpu", "cuda"):
            self._prepare_weight_device()
        return module

    def _set_random_streams(self, seed, layer):
        if (seed, layer) != (self.seed, self.layer):
            self.seed, self.layer = seed, layer
            self._layers = {}
            self._prepare_weight_device()

    def describe(self):
        """The recipe as run, one line per GEMM."""
        return self._layer_on(self.weight.device).describe()

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"quartet.torch.Linear: expected a tensor input, got {type(x).__name__}")
        weight = self.weight
        if weight.dtype != torch.float32:
            raise TypeError(
                f"quartet.torch.Linear: the master weight must be torch.float32, got {weight.dtype} "
                "(was the module cast with .to(dtype), .half() or .bfloat16()? Use autocast for BF16 compute)"
            )
        if x.device != weight.device:
            raise ValueError(f"quartet.torch.Linear: the input is on {x.device}, the weight on {weight.device}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"quartet.torch.Linear: expected an input of shape [..., {self.in_features}], got {list(x.shape)}"
            )
        cast = _autocast_dtype(x.device.type)
        if cast is not None:
            if cast != torch.bfloat16:
                raise TypeError(f"quartet.torch.Linear computes in BF16 under autocast, not {cast}; use dtype=torch.bfloat16")
            x = x.to(torch.bfloat16)
        _function.activation_dtype(x.dtype, "quartet.torch.Linear input")
        x2d = x.reshape(-1, self.in_features)
        training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if training and x2d.shape[0] % self._token_multiple != 0:
            raise ValueError(
                f"quartet.torch.Linear ({self.recipe}): a training call needs a multiple of {self._token_multiple} "
                f"tokens (the wgrad GEMM's rotation runs along them), got {x2d.shape[0]} from an input of shape "
                f"{list(x.shape)}"
            )
        if x2d.shape[0] == 0:
            # No tokens, no products: an empty output whose gradients are zeros, as nn.Linear's.
            y2d = torch.nn.functional.linear(x2d, weight.to(x2d.dtype))
        elif _compiled.is_compiling():
            call = self._calls.clone()
            if training:
                self._calls.add_(1)
            y2d = _compiled.linear(x2d, weight, self._compiled_handle, call)
        elif training:
            call = random.check_layer(self.call, "call number (the layer's 2^32 calls are used up)")
            y2d = _function.LinearFunction.apply(x2d, weight, self._layer_on(x.device), call)
            self._calls.add_(1)
        else:
            y2d, _ = _function.forward(self._layer_on(x.device), _function.prepared(x2d),
                                       _function.prepared(weight.detach()), self.call, save=False)
        y = y2d.reshape(*x.shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def extra_repr(self):
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{super().extra_repr()}, recipe={self.recipe!r}{options}, seed={self.seed}, layer={self.layer}"

    # The C handles are per process: a copy or a pickle makes its own when it first runs.
    def __getstate__(self):
        state = super().__getstate__().copy()
        state["_layers"] = {}
        state["_compiled_handle"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._prepare_weight_device()

    # The random position travels with the state dict, so a resumed run draws what it would have.
    def get_extra_state(self):
        return torch.tensor([self.seed & 0xFFFFFFFF, self.seed >> 32, self.layer, self.call], dtype=torch.int64)

    def set_extra_state(self, state):
        values = [int(v) for v in torch.as_tensor(state).tolist()]
        if len(values) != 4:
            raise ValueError(f"quartet.torch.Linear extra state: expected [seed_lo, seed_hi, layer, call], got {values}")
        seed = random.check_seed(values[0] | (values[1] << 32), "extra state seed")
        layer = random.check_layer(values[2], "extra state layer")
        self._set_random_streams(seed, layer)
        self.call = random.check_layer(values[3], "extra state call")


