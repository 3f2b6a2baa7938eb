"""quartet.torch.Linear against independent oracles: the C interface called directly (bit for
bit), plain PyTorch products (within the stated tolerances of BF16 and of NVFP4 quantization),
and the exact gradient (statistically, for the unbiased backward of quartet2)."""

import copy
import io
import unittest

import torch

import quartet.torch as qt
from support import bits_equal, devices, direct

TOKENS, IN, OUT = 128, 256, 128  # tokens a multiple of 128: quartet2's wgrad rotation


def data(seed, device, tokens=TOKENS, k=IN, n=OUT):
    """x (BF16 values), w (FP32), dy (BF16 values), from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=g).bfloat16().float()
    w = torch.randn(n, k, generator=g) * 0.05
    dy = (torch.randn(tokens, n, generator=g) * 0.01).bfloat16().float()
    return x.to(device), w.to(device), dy.to(device)


def layer_with(w, recipe, bias=False, **kwargs):
    layer = qt.Linear(w.shape[1], w.shape[0], bias=bias, device=w.device, recipe=recipe, **kwargs)
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def train_call(layer, x, dy):
    """One forward and backward; returns (y, dx, dw)."""
    x = x.detach().clone().requires_grad_(True)
    layer.weight.grad = None
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, layer.weight.grad


class Bf16RecipeMatchesTorch(unittest.TestCase):
    """recipe="bf16" is torch.nn.functional.linear with BF16-rounded operands and FP32
    accumulation. With BF16-valued x and dy, the only roundings are the weight's to BF16 (done in
    the reference too), the FP32 accumulation (|error| <= K u sum|a b|, u = 2^-24: Higham's
    bound, K the reduction length) and, for BF16 outputs, one rounding to BF16 (its unit
    roundoff: relative 2^-8, BF16 having 8 significant bits)."""

    def check(self, got, reference, abs_products, k, output_rounding):
        bound = k * 2.0**-24 * abs_products + output_rounding * reference.abs() + 1e-30
        excess = ((got.double() - reference).abs() - bound).max().item()
        self.assertLessEqual(excess, 0.0, "outside the FP32-accumulation bound")

    def test_forward_and_gradients(self):
        for device in devices():
            for dtype in (torch.float32, torch.bfloat16):
                with self.subTest(device=device, dtype=dtype):
                    x, w, dy = data(1, device)
                    layer = layer_with(w, "bf16")
                    y, dx, dw = train_call(layer, x.to(dtype), dy.to(dtype))
                    wb = w.bfloat16().double()
                    rounding = 2.0**-8 if dtype == torch.bfloat16 else 0.0
                    self.assertEqual(y.dtype, dtype)
                    self.check(y, x.double() @ wb.T, x.double().abs() @ wb.abs().T, IN, rounding)
                    self.check(dx, dy.double() @ wb, dy.double().abs() @ wb.abs(), OUT, rounding)
                    self.check(dw, dy.double().T @ x.double(), dy.double().abs().T @ x.double().abs(), TOKENS, 0.0)


class QuantizedMatchesCApi(unittest.TestCase):
    """The module gives the bits of the C interface called directly with the same inputs, seed,
    layer index and call number, through every path that rearranges its input."""

    def test_recipes_bitwise(self):
        for device in devices():
            for recipe in ("quartet2", "nvidia", "tetrajet2", "quartet1"):
                for dtype in (torch.bfloat16, torch.float32):
                    with self.subTest(device=device, recipe=recipe, dtype=dtype):
                        x, w, dy = data(2, device)
                        layer = layer_with(w, recipe, seed=99, layer=5)
                        # A 3-D input that is not contiguous: [2, 64, IN] seen through a transpose.
                        x3 = x.to(dtype).reshape(64, 2, IN).transpose(0, 1)
                        dy3 = dy.to(dtype).reshape(64, 2, OUT).transpose(0, 1)
                        y, dx, dw = train_call(layer, x3, dy3)
                        ey, edx, edw = direct(recipe, {}, x3.reshape(-1, IN), w, dy3.reshape(-1, OUT), 99, 5, 0)
                        self.assertEqual(list(y.shape), [2, 64, OUT])
                        self.assertTrue(bits_equal(y.reshape(-1, OUT), ey), "Y")
                        self.assertTrue(bits_equal(dx.reshape(-1, IN), edx), "dX")
                        self.assertTrue(bits_equal(dw, edw), "dW")

    def test_each_training_call_draws_the_next_call_number(self):
        for device in devices():
            with self.subTest(device=device):
                x, w, dy = data(3, device)
                layer = layer_with(w, "quartet2", seed=4, layer=2)
                _, _, dw0 = train_call(layer, x, dy)
                _, _, dw1 = train_call(layer, x, dy)
                self.assertEqual(layer.call, 2)
                self.assertTrue(bits_equal(dw0, direct("quartet2", {}, x, w, dy, 4, 2, 0)[2]))
                self.assertTrue(bits_equal(dw1, direct("quartet2", {}, x, w, dy, 4, 2, 1)[2]))
                self.assertFalse(bits_equal(dw0, dw1), "two calls drew the same bits")
                with torch.no_grad():
                    layer(x)
                self.assertEqual(layer.call, 2, "an inference call took a call number")

    def test_options_reach_the_library(self):
        x, w, dy = data(4, "cpu")
        options = {"backward_rotation": 32, "four_over_six": False}
        layer = layer_with(w, "quartet2", seed=1, layer=0, **options)
        self.assertIn("RHT-32", layer.describe())
        _, dx, dw = train_call(layer, x, dy)
        _, edx, edw = direct("quartet2", options, x, w, dy, 1, 0, 0)
        self.assertTrue(bits_equal(dx, edx) and bits_equal(dw, edw))
        _, pdx, _ = direct("quartet2", {}, x, w, dy, 1, 0, 0)
        self.assertFalse(bits_equal(dx, pdx), "the options changed nothing")

    def test_bias_is_added_after_the_product(self):
        x, w, dy = data(5, "cpu")
        layer = layer_with(w, "quartet2", bias=True, seed=1, layer=0)
        with torch.no_grad():
            layer.bias.copy_(torch.linspace(-1, 1, OUT))
        y, _, _ = train_call(layer, x, dy)
        ey, _, _ = direct("quartet2", {}, x, w, dy, 1, 0, 0)
        self.assertTrue(bits_equal(y, ey + layer.bias.detach()))
        self.assertTrue(torch.equal(layer.bias.grad, dy.sum(0)))

    def test_bf16_autocast_casts_the_input(self):
        for device in devices():
            with self.subTest(device=device):
                x, w, dy = data(6, device)
                layer = layer_with(w, "quartet2", seed=8, layer=1)
                xf = x.clone().requires_grad_(True)
                with torch.autocast(device_type=device, dtype=torch.bfloat16):
                    y = layer(xf)
                y.backward(dy.bfloat16())
                ey, edx, edw = direct("quartet2", {}, x.bfloat16(), w, dy.bfloat16(), 8, 1, 0)
                self.assertEqual(y.dtype, torch.bfloat16)
                self.assertTrue(bits_equal(y, ey))
                self.assertTrue(bits_equal(xf.grad, edx.float()))
                self.assertTrue(bits_equal(layer.weight.grad, edw))

    def test_several_forwards_before_their_backwards(self):
        # Gradient accumulation: each forward keeps its own saved state and call number.
        x0, w, dy0 = data(7, "cpu")
        x1, _, dy1 = data(8, "cpu")
        layer = layer_with(w, "quartet2", seed=2, layer=3)
        y0 = layer(x0)
        y1 = layer(x1)
        (y1 * dy1).sum().backward()
        (y0 * dy0).sum().backward()
        dw = direct("quartet2", {}, x0, w, dy0, 2, 3, 0)[2] + direct("quartet2", {}, x1, w, dy1, 2, 3, 1)[2]
        self.assertTrue(bits_equal(layer.weight.grad, dw))

    def test_inference_takes_any_number_of_tokens(self):
        x, w, _ = data(9, "cpu", tokens=100)
        layer = layer_with(w, "quartet2", seed=1, layer=0)
        with torch.no_grad():
            y = layer(x)
        self.assertEqual(list(y.shape), [100, OUT])
        empty = torch.zeros(0, IN, requires_grad=True)
        out = layer(empty)
        out.sum().backward()
        self.assertEqual(list(out.shape), [0, OUT])
        self.assertTrue(torch.equal(layer.weight.grad, torch.zeros_like(w)))


class CompiledPathMatchesEager(unittest.TestCase):
    """What the torch.compile operators run (python/quartet/torch/_compiled.py: a backward that
    recomputes the forward's saved state, a call number in a tensor, layers named by handles)
    gives the eager layer's bits. The operators themselves need PyTorch 2.4 (test_compile)."""

    def test_operator_bodies_bitwise(self):
        from quartet.torch import _compiled

        for device in devices():
            for recipe in ("quartet2", "nvidia", "quartet1"):
                with self.subTest(device=device, recipe=recipe):
                    x, w, dy = data(14, device)
                    layer = layer_with(w, recipe, seed=6, layer=4)
                    eager = train_call(layer, x, dy)
                    handle = _compiled.register(layer._layer_on(torch.device(device)))
                    call = torch.tensor(0, dtype=torch.int64)
                    y = _compiled.forward_impl(x, w, handle, call)
                    dx, dw = _compiled.backward_impl(x, w, dy, handle, call)
                    self.assertTrue(bits_equal(y, eager[0]) and bits_equal(dx, eager[1]) and bits_equal(dw, eager[2]))


class QuantizedIsCloseToTorch(unittest.TestCase):
    """The NVFP4 forward's relative error against the exact product, compared with an oracle
    written here in plain PyTorch: round-to-nearest onto the E2M1 grid in blocks of 16 whose
    largest magnitude maps to 6 (no FP8 scale rounding, no 4/6). For independent errors
    e_x, e_w of the operands the product's relative error is about sqrt(e_x^2 + e_w^2) (0.134
    for Gaussian data); the recipes' refinements move it by less than a quarter either way
    (4/6 lowers it, 16x16 weight blocks raise it), so each must lie within [0.75, 1.25] times
    the oracle's."""

    GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)

    def rtn(self, t):
        blocks = t.reshape(-1, 16)
        scale = blocks.abs().amax(dim=1, keepdim=True) / 6
        scale[scale == 0] = 1
        codes = (((blocks / scale).abs().unsqueeze(-1) - self.GRID).abs().argmin(dim=-1))
        return (self.GRID[codes] * blocks.sign() * scale).reshape(t.shape)

    def test_forward_error(self):
        for device in devices():
            for recipe in ("quartet2", "nvidia", "nvidia+4/6", "tetrajet2"):
                with self.subTest(device=device, recipe=recipe):
                    x, w, _ = data(10, device)
                    layer = layer_with(w, recipe, seed=1, layer=0)
                    with torch.no_grad():
                        y = layer(x).double().cpu()
                    xd, wd = x.double().cpu(), w.double().cpu()
                    exact = xd @ wd.T
                    error = ((y - exact).norm() / exact.norm()).item()
                    oracle = ((self.rtn(xd) @ self.rtn(wd).T - exact).norm() / exact.norm()).item()
                    self.assertGreater(error, 0.75 * oracle, f"error {error:.4f}, oracle {oracle:.4f}")
                    self.assertLess(error, 1.25 * oracle, f"error {error:.4f}, oracle {oracle:.4f}")


class Quartet2BackwardIsUnbiased(unittest.TestCase):
    """quartet2's backward (MS-EDEN under fresh random rotations) estimates the gradient without
    bias. With the forward in BF16 (quantize_forward=False) the backward quantizes dy, W and X
    themselves, so the expectation is the exact gradient dy W and dy^T x, computed here in float64.

    Statistic: B draws (fresh call numbers) in G groups of b. Where the estimator is unbiased,
    E||mean of a group - exact||^2 = E||draw - exact||^2 / b, so R_g = b ||mean_g - exact||^2 /
    (mean over all draws of ||draw - exact||^2) has mean 1; a bias adds b ||bias||^2 / that
    mean. The groups are independent, so the standard error of mean(R_g) comes from their
    spread, whatever the correlations between elements. The test asks |mean R - 1| < 4 standard
    errors; a control with a biased backward (round to nearest) must fail it."""

    DRAWS, GROUPS = 400, 20

    def ratio(self, device, **options):
        x, w, dy = data(11, device, tokens=128, k=128, n=128)
        layer = layer_with(w, "quartet2", seed=21, layer=0, quantize_forward=False, **options)
        dxs, dws = [], []
        for _ in range(self.DRAWS):
            _, dx, dw = train_call(layer, x, dy)
            dxs.append(dx.double().cpu())
            dws.append(dw.double().cpu())
        xd, wd, dyd = x.double().cpu(), w.double().cpu(), dy.double().cpu()
        results = {}
        for name, draws, exact in (("dx", torch.stack(dxs), dyd @ wd), ("dw", torch.stack(dws), dyd.T @ xd)):
            single = ((draws - exact) ** 2).sum(dim=(1, 2)).mean()
            b = self.DRAWS // self.GROUPS
            groups = draws.reshape(self.GROUPS, b, *exact.shape).mean(dim=1)
            r = b * ((groups - exact) ** 2).sum(dim=(1, 2)) / single
            results[name] = (r.mean().item(), (r.std() / self.GROUPS**0.5).item())
        return results

    def test_gradients_are_unbiased(self):
        for device in devices():
            for name, (mean, stderr) in self.ratio(device).items():
                with self.subTest(device=device, gradient=name):
                    self.assertLess(abs(mean - 1), 4 * stderr, f"{name}: R = {mean:.4f} +- {stderr:.4f}")

    def test_a_biased_backward_is_detected(self):
        for name, (mean, stderr) in self.ratio("cpu", backward_quantizer="rtn").items():
            with self.subTest(gradient=name):
                self.assertGreater(mean - 1, 4 * stderr, f"{name}: R = {mean:.4f} +- {stderr:.4f}")


class RandomState(unittest.TestCase):
    def test_manual_seed_sets_seed_and_restarts_layer_numbering(self):
        qt.manual_seed(7)
        a, b = qt.Linear(16, 16, recipe="bf16"), qt.Linear(16, 16, recipe="bf16")
        self.assertEqual((a.seed, a.layer, b.seed, b.layer), (7, 0, 7, 1))
        qt.manual_seed(7)
        self.assertEqual(qt.Linear(16, 16, recipe="bf16").layer, 0)
        self.assertEqual(qt.initial_seed(), 7)

    def test_state_dict_carries_the_random_position(self):
        x, w, dy = data(12, "cpu")
        layer = layer_with(w, "quartet2", seed=2**40 + 3, layer=9)
        train_call(layer, x, dy)
        train_call(layer, x, dy)
        resumed = layer_with(torch.zeros_like(w), "quartet2", seed=1, layer=0)
        resumed.load_state_dict(layer.state_dict())
        self.assertEqual((resumed.seed, resumed.layer, resumed.call), (2**40 + 3, 9, 2))
        self.assertTrue(bits_equal(train_call(resumed, x, dy)[2], train_call(layer, x, dy)[2]))

    def test_copies_and_pickles_run(self):
        x, w, dy = data(13, "cpu")
        layer = layer_with(w, "quartet2", seed=3, layer=1)
        twin = copy.deepcopy(layer)
        buffer = io.BytesIO()
        torch.save(layer, buffer)
        buffer.seek(0)
        # A whole module, not only tensors: PyTorch 2.6+ loads only weights unless told otherwise.
        loaded = torch.load(buffer, weights_only=False)
        expected = train_call(layer, x, dy)[2]
        self.assertTrue(bits_equal(train_call(twin, x, dy)[2], expected))
        self.assertTrue(bits_equal(train_call(loaded, x, dy)[2], expected))


class Errors(unittest.TestCase):
    def assert_error(self, kind, parts, f):
        with self.assertRaises(kind) as caught:
            f()
        for part in parts:
            self.assertIn(part, str(caught.exception))

    def test_construction(self):
        self.assert_error(ValueError, ["unknown recipe 'quartet3'", "quartet2"], lambda: qt.Linear(128, 128, recipe="quartet3"))
        self.assert_error(ValueError, ["out_features = 100", "multiple of 128"], lambda: qt.Linear(128, 100))
        self.assert_error(ValueError, ["backward rotation must be 16, 32 or 128, got 64"],
                          lambda: qt.Linear(128, 128, backward_rotation=64))
        self.assert_error(ValueError, ["unknown recipe option 'rotation'"], lambda: qt.Linear(128, 128, rotation=32))
        self.assert_error(TypeError, ["recipe option backward_rotation", "got list"],
                          lambda: qt.Linear(128, 128, backward_rotation=[32]))
        self.assert_error(TypeError, ["dtype must be torch.float32, got torch.bfloat16"],
                          lambda: qt.Linear(128, 128, dtype=torch.bfloat16))
        self.assert_error(ValueError, ["seed", "[0, 2^64)", "-1"], lambda: qt.Linear(128, 128, seed=-1))
        self.assert_error(TypeError, ["recipe: expected a recipe name"], lambda: qt.Linear(128, 128, recipe=None))

    def test_calls(self):
        layer = qt.Linear(128, 128)
        self.assert_error(TypeError, ["expected torch.float32 or torch.bfloat16, got torch.float16"],
                          lambda: layer(torch.zeros(128, 128, dtype=torch.float16)))
        self.assert_error(TypeError, ["torch.float64"], lambda: layer(torch.zeros(128, 128, dtype=torch.float64)))
        self.assert_error(ValueError, ["[..., 128]", "[4, 100]"], lambda: layer(torch.zeros(4, 100)))
        self.assert_error(ValueError, ["multiple of 128", "got 100", "[100, 128]"],
                          lambda: layer(torch.zeros(100, 128, requires_grad=True)))
        x = torch.randn(128, 128)
        x[3, 4] = float("nan")
        self.assert_error(qt.QuartetNonFiniteError, ["nan"], lambda: layer(x))
        self.assert_error(TypeError, ["master weight must be torch.float32, got torch.bfloat16"],
                          lambda: copy.deepcopy(layer).bfloat16()(torch.zeros(128, 128)))


if __name__ == "__main__":
    unittest.main()
