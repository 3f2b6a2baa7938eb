"""quartet.torch.Linear under torch.compile (PyTorch 2.4 and later: torch.library.custom_op):
one graph without breaks, the eager layer's bits, and no recompilation as the call number
advances. Skipped on older PyTorch."""

import copy
import unittest

import torch

import quartet.torch as qt
from support import bits_equal, devices


def steps(module, xs, dys):
    results = []
    for x, dy in zip(xs, dys):
        x = x.clone().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        y = module(x)
        y.backward(dy)
        results.append((y.detach(), x.grad, module.weight.grad.clone()))
    return results


class Compiled(unittest.TestCase):
    def setUp(self):
        if not hasattr(torch.library, "custom_op"):
            self.skipTest(f"torch.compile support needs PyTorch 2.4+ (torch.library.custom_op); this is {torch.__version__}")

    def test_matches_eager_without_graph_breaks(self):
        import torch._dynamo

        for device in devices():
            backends = ["aot_eager"] + (["inductor"] if device == "cuda" else [])
            for backend in backends:
                with self.subTest(device=device, backend=backend):
                    torch._dynamo.reset()
                    g = torch.Generator().manual_seed(3)
                    eager = qt.Linear(256, 128, bias=True, recipe="quartet2", seed=5, layer=1, device=device)
                    compiled_module = copy.deepcopy(eager)
                    compiled = torch.compile(compiled_module, backend=backend, fullgraph=True)
                    xs = [torch.randn(2, 64, 256, generator=g).to(device) for _ in range(3)]
                    dys = [(torch.randn(2, 64, 128, generator=g) * 0.01).to(device) for _ in range(3)]
                    expected = steps(eager, xs, dys)
                    got = steps(compiled, xs, dys)
                    for step, (e, c) in enumerate(zip(expected, got)):
                        for name, a, b in zip(("y", "dx", "dw"), e, c):
                            self.assertTrue(bits_equal(a, b), f"step {step}: {name} differs from eager")
                    self.assertEqual(compiled_module.call, 3)
                    self.assertEqual(eager.call, 3)


if __name__ == "__main__":
    unittest.main()
