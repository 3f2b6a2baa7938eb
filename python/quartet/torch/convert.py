"""quartet.torch.convert: replaces a model's nn.Linear layers with quartet.torch.Linear."""

import fnmatch

import torch

from quartet import _capi
from quartet.torch import random
from quartet.torch.linear import Linear


def _find_blocks(model):
    """The name of the model's list of repeated blocks: the nn.ModuleList with the most entries
    that hold linear layers (model.layers in a Hugging Face Llama)."""
    best, best_count = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList):
            continue
        count = sum(any(isinstance(m, torch.nn.Linear) for m in block.modules()) for block in module)
        if count > best_count:
            best, best_count = name, count
    return best


def _output_embeddings(model):
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return head if isinstance(head, torch.nn.Linear) else None


def convert(model, recipe="quartet2", skip=(), first_blocks=0, last_blocks=0, lm_head=False, blocks=None, seed=None,
            **options):
    """Replaces, in place, the nn.Linear modules of `model` with quartet.torch.Linear running
    `recipe` (with its `options`), copying weights and biases (weights into FP32 masters), and
    returns the model.

    Left as they are: layers whose qualified name matches a glob pattern of `skip` (e.g.
    "*.mlp.down_proj"); layers in the first `first_blocks` and last `last_blocks` entries of the
    block list (`blocks`, the name of an nn.ModuleList; by default the one with the most blocks
    that hold linear layers: model.layers in a Hugging Face Llama); and the LM head (the model's
    get_output_embeddings(), or a module named lm_head) unless `lm_head` is True.

    Nothing is replaced unless every selected layer can be: a shape the recipe cannot take, or
    a weight shared with another parameter (tied embeddings), is an error naming the layer.
    Layer indices for the random streams follow the order of model.named_modules().
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(skip, str):
        skip = (skip,)
    for count, what in ((first_blocks, "first_blocks"), (last_blocks, "last_blocks")):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"convert: {what} must be a non-negative int, got {count!r}")
    if seed is not None:
        random.check_seed(seed)

    skipped_prefixes = []
    if first_blocks or last_blocks:
        name = blocks if blocks is not None else _find_blocks(model)
        if name is None:
            raise ValueError("convert: first_blocks/last_blocks need a block list, and the model has no nn.ModuleList "
                             "of blocks with linear layers; name one with blocks=")
        block_list = model.get_submodule(name)
        if not isinstance(block_list, torch.nn.ModuleList):
            raise ValueError(f"convert: blocks={name!r} is a {type(block_list).__name__}, not an nn.ModuleList")
        n = len(block_list)
        if first_blocks + last_blocks > n:
            raise ValueError(f"convert: first_blocks={first_blocks} and last_blocks={last_blocks} leave none of the "
                             f"{n} blocks of {name!r}")
        prefix = f"{name}." if name else ""
        skipped_prefixes = [f"{prefix}{i}." for i in list(range(first_blocks)) + list(range(n - last_blocks, n))]
    elif blocks is not None:
        raise ValueError("convert: blocks= only matters with first_blocks or last_blocks")

    head = _output_embeddings(model)
    selected = []
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear:  # quartet Linear layers (and other subclasses) stay
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in skip):
            continue
        if any(name.startswith(p) for p in skipped_prefixes):
            continue
        is_head = module is head or (head is None and name.rsplit(".", 1)[-1] == "lm_head")
        if is_head and not lm_head:
            continue
        selected.append((name, module))

    # Every check before the first replacement: the model is converted whole or not at all.
    owners = {}  # id(parameter) -> every qualified name it has
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param_name, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append(f"{module_name}.{param_name}" if module_name else param_name)
    layer_seed = seed if seed is not None else random.initial_seed()
    replacements = []
    for name, module in selected:
        sharing = [n for n in owners.get(id(module.weight), []) if n != f"{name}.weight"]
        if sharing:
            raise ValueError(f"convert: layer '{name}' shares its weight with {', '.join(sharing)} (tied weights); "
                             "skip it, or untie the weights first")
        try:
            replacement = Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                 device=module.weight.device if module.weight.device.type != "meta" else None,
                                 recipe=recipe, seed=layer_seed, layer=0, **options)
        except (_capi.QuartetError, ValueError, TypeError) as e:
            raise type(e)(*((e.status,) if isinstance(e, _capi.QuartetError) else ()),
                          f"convert: layer '{name}' ({module.in_features} -> {module.out_features}): {e}") from e
        replacements.append((name, module, replacement))

    first_layer = random.reserve_layer_indices(len(replacements))
    for i, (name, module, replacement) in enumerate(replacements):
        replacement._set_random_streams(layer_seed, first_layer + i)
        with torch.no_grad():
            replacement.weight.copy_(module.weight.detach().to(torch.float32))
            if module.bias is not None:
                replacement.bias.copy_(module.bias.detach().to(torch.float32))
        replacement.weight.requires_grad_(module.weight.requires_grad)
        if module.bias is not None:
            replacement.bias.requires_grad_(module.bias.requires_grad)
        replacement.train(module.training)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, replacement)
    return model
