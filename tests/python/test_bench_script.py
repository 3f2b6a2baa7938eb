"""bench/torch_linear_bench.py on the CPU: its cases are quartet bench's (the shapes read from
src/bench/gpu_bench.cpp, the command line accepted by the quartet program QUARTET names), its
rows and ratios, and its errors. The timings themselves need the GPU machine."""

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import re
import types
import unittest
from unittest import mock

import torch

import quartet.torch as qt

ROOT = pathlib.Path(__file__).resolve().parents[2]
GPU_BENCH = ROOT / "src" / "bench" / "gpu_bench.cpp"


def load_script():
    spec = importlib.util.spec_from_file_location("torch_linear_bench", ROOT / "bench" / "torch_linear_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tb = load_script()


def linear_section():
    """The linear-layer section of quartet bench's source, where its cases are defined."""
    text = GPU_BENCH.read_text()
    start = text.index('o.wants("linear")')
    return text[start:text.index("o.wants(", start + 1)]


def product(expression, d, ffn):
    """The value of a factor list such as `3 * set.d` (all gpu_bench.cpp's shapes use)."""
    names = {"set.d": d, "set.ffn": ffn}
    value = 1
    for factor in (f.strip() for f in expression.split("*")):
        if factor.isdigit():
            value *= int(factor)
        elif factor in names:
            value *= names[factor]
        else:
            raise AssertionError(f"gpu_bench.cpp's linear shapes use '{factor}', which this test cannot read")
    return value


def cpp_shape_sets():
    """{name: (d, ffn)} of the ShapeSet list in gpu_bench.cpp."""
    block = re.search(r"std::vector<ShapeSet> sets = \{(.*?)\};", linear_section(), re.S).group(1)
    return {name: (int(d), int(ffn)) for name, d, ffn in re.findall(r'\{"(\w+)",\s*(\d+),\s*(\d+)\}', block)}


def cpp_linears(d, ffn):
    """The (in, out) pairs of gpu_bench.cpp's `linears[]`, evaluated at a shape set."""
    block = re.search(r"linears\[\] = \{(.*?)\};", linear_section(), re.S).group(1)
    return [(product(k, d, ffn), product(n, d, ffn)) for k, n in re.findall(r"\{([^{},]+),([^{},]+)\}", block)]


def timing(ms):
    return tb.Timing(ms, 20)


class CasesAreQuartetBenchs(unittest.TestCase):
    def test_shape_sets(self):
        self.assertEqual(tb.SHAPE_SETS, cpp_shape_sets())

    def test_tokens(self):
        quick, full = re.search(r"tokens = o\.quick \? (\d+) : (\d+);", linear_section()).groups()
        self.assertEqual((tb.QUICK_TOKENS, tb.TOKENS), (int(quick), int(full)))
        self.assertEqual({c.tokens for c in tb.linear_cases(["7B"], ["quartet2"], quick=True)}, {int(quick)})

    def test_four_linears_of_a_block(self):
        for name, (d, ffn) in cpp_shape_sets().items():
            linears = cpp_linears(d, ffn)
            self.assertEqual(len(linears), 4, name)
            self.assertEqual(tb.block_linears(d, ffn), linears, name)
            for case in tb.linear_cases([name], ["quartet2"], quick=False):
                self.assertEqual(case.linears(), linears, case.name)

    def test_every_layer_and_pass_in_order(self):
        cases = tb.linear_cases(["800M", "7B"], ["quartet2", "nvidia"], quick=False)
        names = [c.name for c in cases]
        layers = ("bf16-nn", "bf16", "quartet2", "nvidia")
        expected = [f"torch/{layer}/{s}/{p}" for s in ("800M", "7B") for layer in layers for p in ("fwd", "fwdbwd")]
        self.assertEqual(names, expected)
        by_name = {c.name: c for c in cases}
        self.assertEqual(by_name["torch/quartet2/7B/fwdbwd"].cpp_name, "linear/quartet2/7B/fwdbwd")
        self.assertEqual(by_name["torch/bf16/800M/fwd"].cpp_name, "linear/bf16/800M/fwd")
        self.assertIsNone(by_name["torch/bf16-nn/7B/fwdbwd"].cpp_name)
        self.assertEqual(by_name["torch/quartet2/7B/fwd"].baseline_name, "torch/bf16-nn/7B/fwd")

    def test_bf16_is_always_timed_once_and_first(self):
        self.assertEqual(tb.with_bf16(["quartet2", "bf16"]), ["bf16", "quartet2"])
        self.assertEqual(tb.with_bf16([]), ["bf16"])

    def test_the_llama_step_fits_quartet2(self):
        # The library (CPU context) decides: every converted shape builds, the tokens of a step
        # are a multiple of what a training call needs.
        for quick in (False, True):
            config, batch, seq = tb.llama_setup(quick)
            for k, n in tb.llama_linear_shapes(config):
                layer = qt.Linear(k, n, bias=False, recipe="quartet2")
                self.assertEqual(batch * seq % layer._token_multiple, 0, (k, n, batch, seq))
        self.assertEqual(tb.llama_setup(False)[0]["hidden_size"], 640)
        self.assertEqual(tb.llama_setup(True)[0]["num_hidden_layers"], tb.QUICK_LLAMA_LAYERS)


class Rows(unittest.TestCase):
    def setUp(self):
        self.cases = tb.linear_cases(["7B"], ["quartet2"], quick=False)
        self.timings = {c.name: timing(1.0) for c in self.cases}
        self.timings.update({"torch/bf16-nn/7B/fwdbwd": timing(10.0), "torch/quartet2/7B/fwdbwd": timing(12.0)})
        self.cpp = {"linear/quartet2/7B/fwdbwd": {"case": "linear/quartet2/7B/fwdbwd", "median_ms": 11.5},
                    "linear/bf16/7B/fwdbwd": {"case": "linear/bf16/7B/fwdbwd", "error": "out of memory"}}

    def rows(self):
        return {r["case"]: r for r in tb.linear_rows(self.cases, self.timings, self.cpp)}

    def test_ratios_to_bf16_and_to_cpp(self):
        row = self.rows()["torch/quartet2/7B/fwdbwd"]
        self.assertEqual(row["median_ms"], 12.0)
        self.assertAlmostEqual(row["ratio_to_bf16"], 1.2)
        self.assertAlmostEqual(row["ratio_to_cpp"], 12.0 / 11.5)
        self.assertEqual((row["bf16_ms"], row["cpp_ms"]), (10.0, 11.5))
        self.assertEqual((row["tokens"], row["d"], row["ffn"]), (16384, 4096, 11008))

    def test_the_baseline_has_no_cpp_ratio(self):
        row = self.rows()["torch/bf16-nn/7B/fwdbwd"]
        self.assertEqual(row["ratio_to_bf16"], 1.0)
        self.assertNotIn("ratio_to_cpp", row)
        self.assertNotIn("cpp_error", row)

    def test_a_missing_or_failed_cpp_row_gives_no_ratio(self):
        rows = self.rows()
        self.assertEqual(rows["torch/bf16/7B/fwdbwd"]["cpp_error"], "out of memory")
        self.assertIn("no row linear/quartet2/7B/fwd", rows["torch/quartet2/7B/fwd"]["cpp_error"])
        for name in ("torch/bf16/7B/fwdbwd", "torch/quartet2/7B/fwd"):
            self.assertNotIn("ratio_to_cpp", rows[name])

    def test_a_failed_case_is_a_row_with_its_error(self):
        self.timings["torch/bf16-nn/7B/fwdbwd"] = "OutOfMemoryError: CUDA out of memory"
        rows = self.rows()
        self.assertEqual(rows["torch/bf16-nn/7B/fwdbwd"]["error"], "OutOfMemoryError: CUDA out of memory")
        self.assertNotIn("median_ms", rows["torch/bf16-nn/7B/fwdbwd"])
        self.assertNotIn("ratio_to_bf16", rows["torch/quartet2/7B/fwdbwd"])
        self.assertIn("ratio_to_cpp", rows["torch/quartet2/7B/fwdbwd"])

    def test_llama_step_rows(self):
        config, batch, seq = tb.llama_setup(False)
        rows = tb.llama_rows({"bf16-nn": timing(40.0), "quartet2": timing(44.0)}, config, batch, seq)
        self.assertEqual([r["case"] for r in rows], ["torch/bf16-nn/llama-step", "torch/quartet2/llama-step"])
        self.assertAlmostEqual(rows[1]["ratio_to_bf16"], 1.1)
        self.assertAlmostEqual(rows[1]["tokens_per_s"], 8 * 1024 / 0.044)
        skipped = tb.llama_rows({"bf16-nn": "skipped: no transformers", "quartet2": "skipped: no transformers"},
                                config, batch, seq)
        self.assertTrue(all(r["error"].startswith("skipped") and "median_ms" not in r for r in skipped))

    def test_compiled_llama_step_rows(self):
        config, batch, seq = tb.llama_setup(False)
        rows = tb.llama_rows({"bf16-nn": timing(30.0), "quartet2": timing(36.0)}, config, batch, seq, compiled=True)
        self.assertEqual([r["case"] for r in rows],
                         ["torch/bf16-nn/llama-step-compiled", "torch/quartet2/llama-step-compiled"])
        self.assertAlmostEqual(rows[1]["ratio_to_bf16"], 1.2)  # against the compiled baseline
        self.assertEqual(rows[1]["bf16_ms"], 30.0)

    def test_compile_needs_the_llama_step(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
            tb.parse_args(["--quartet", "q", "--compile", "--no-llama"])
        self.assertIn("--compile times the Llama training step", err.getvalue())
        self.assertTrue(tb.parse_args(["--quartet", "q", "--compile"]).compile)
        self.assertFalse(tb.parse_args(["--quartet", "q"]).compile)

    def test_the_report(self):
        rows = tb.linear_rows(self.cases, self.timings, self.cpp)
        report = tb.make_report("H100", rows, {"commit": "abc1234", "device": "H100 (cpp)"}, {"path": "x"})
        self.assertEqual(report["commit"], "abc1234")  # no git: the quartet program's commit
        self.assertEqual(tb.make_report("H100", rows, {"commit": "abc1234"}, {}, commit="v1-2-gdef")["commit"],
                         "v1-2-gdef")
        for key in ("device", "commit", "date", "torch_version", "results"):
            self.assertIn(key, report)
        self.assertEqual(json.loads(json.dumps(report))["results"], rows)
        table = tb.format_table(rows)
        self.assertIn("torch/quartet2/7B/fwdbwd", table)
        self.assertIn("1.043", table)  # 12 / 11.5

    def test_host_time_is_reported_where_measured(self):
        config, batch, seq = tb.llama_setup(False)
        rows = tb.llama_rows({"bf16-nn": tb.Timing(40.0, 20, 1.5), "quartet2": timing(44.0)}, config, batch, seq)
        self.assertEqual(rows[0]["host_ms"], 1.5)
        self.assertNotIn("host_ms", rows[1])
        table = tb.format_table(rows).splitlines()
        self.assertEqual(table[0].split()[:3], ["case", "median_ms", "host_ms"])
        self.assertEqual(table[1].split()[:3], ["torch/bf16-nn/llama-step", "40.000", "1.500"])

    def test_median_as_quartet_bench_takes_it(self):
        self.assertEqual(tb.median([3.0, 1.0, 2.0, 4.0]), 3.0)
        self.assertEqual(tb.median([2.0, 9.0, 1.0]), 2.0)
        with self.assertRaises(ValueError):
            tb.median([])
        self.assertEqual(tb.repetition_limits(7, quick=False), (7, 7, 0.0))
        self.assertEqual(tb.repetition_limits(0, quick=False), (20, 50, 3.0))

    def test_shapes_that_drifted_apart_are_an_error(self):
        cpp = {"linear/quartet2/7B/fwd": {"case": "linear/quartet2/7B/fwd", "median_ms": 1.0, "tokens": 16384,
                                          "d": 4096, "ffn": 11008}}
        tb.check_cpp_shapes(self.cases, cpp)
        cpp["linear/quartet2/7B/fwd"]["ffn"] = 11264
        with self.assertRaisesRegex(tb.BenchError, "drifted apart"):
            tb.check_cpp_shapes(self.cases, cpp)


class StepsRunOnTheCpu(unittest.TestCase):
    """What the GPU times, run once on the CPU at small shapes (a multiple of quartet2's 128)."""

    def test_block_step_computes_dx_and_dw_afresh(self):
        shapes = tb.block_linears(128, 128)
        xs, dys = tb.make_inputs(shapes, 128, device="cpu")
        for layer in ("bf16-nn", "quartet2"):
            layers = tb.make_layers(layer, shapes, device="cpu")
            self.assertEqual(all(isinstance(m, qt.Linear) for m in layers), layer != "bf16-nn")
            tb.block_step(layers, xs, dys, backward=True)
            first = [m.weight.grad.clone() for m in layers]
            for (k, n), m, x in zip(shapes, layers, xs):
                self.assertEqual((tuple(x.grad.shape), x.grad.dtype), ((128, k), torch.bfloat16), layer)
                self.assertEqual((tuple(m.weight.grad.shape), m.weight.grad.dtype), ((n, k), torch.float32), layer)
            tb.block_step(layers, xs, dys, backward=True)
            # Not added into the last repetition's, which would double the norm (quartet2 draws
            # fresh stochastic bits each call, so the gradients are not equal).
            for m, g in zip(layers, first):
                self.assertLess(abs(m.weight.grad.norm().item() / g.norm().item() - 1), 0.3, layer)
            tb.block_step(layers, xs, dys, backward=False)
            self.assertTrue(all(t.grad is None for t in xs + [m.weight for m in layers]), layer)

    def test_training_step_moves_a_converted_model(self):
        class Tiny(torch.nn.Module):  # the Hugging Face interface the step uses: input_ids, labels -> .loss
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Embedding(256, 128)
                self.proj = torch.nn.Linear(128, 256, bias=False)

            def forward(self, input_ids, labels):
                logits = self.proj(self.embed(input_ids)).float()
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
                return types.SimpleNamespace(loss=loss)

        model = qt.convert(Tiny(), recipe="quartet2")
        self.assertIsInstance(model.proj, qt.Linear)
        before = model.proj.weight.detach().clone()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        tb.training_step(model, optimizer, torch.randint(0, 256, (2, 64)))
        self.assertGreater((model.proj.weight - before).abs().max().item(), 0)
        self.assertIsNone(model.proj.weight.grad)


class CommandLine(unittest.TestCase):
    def test_the_quartet_bench_command(self):
        command = tb.cpp_command("./quartet", ["800M", "7B"], ["bf16", "quartet2"], "out.json", 7, True)
        self.assertEqual(command, ["./quartet", "bench", "--only", "linear", "--sets", "800M,7B", "--recipes",
                                   "bf16,quartet2", "--json", "out.json", "--quick", "--reps", "7"])
        self.assertNotIn("--reps", tb.cpp_command("q", ["7B"], ["bf16"], "o.json", 0, False))

    def test_bad_lists_are_refused(self):
        with self.assertRaisesRegex(tb.BenchError, "unknown entry '13B'"):
            tb.parse_names("7B,13B", "sets", allowed=list(tb.SHAPE_SETS))
        with self.assertRaisesRegex(tb.BenchError, "empty entry"):
            tb.parse_names("quartet2,,nvidia", "recipes")
        self.assertEqual(tb.parse_names("7B, 800M,7B", "sets", allowed=list(tb.SHAPE_SETS)), ["7B", "800M"])

    def test_without_cuda_it_says_so_and_fails(self):
        stderr = io.StringIO()
        with mock.patch("torch.cuda.is_available", return_value=False), contextlib.redirect_stderr(stderr):
            status = tb.main(["--quartet", "/nonexistent/quartet", "--quick"])
        self.assertEqual(status, 1)
        self.assertIn("torch_linear_bench: needs a CUDA device", stderr.getvalue())
        self.assertIn("GPU machine", stderr.getvalue())

    def test_a_missing_program_is_named(self):
        with self.assertRaisesRegex(tb.BenchError, "/nonexistent/quartet.*not an executable"):
            tb.run_cpp_bench("/nonexistent/quartet", ["7B"], ["bf16"], 0, True)

    def test_quartet_bench_takes_the_command_and_its_failure_is_reported(self):
        # A CPU build accepts the command line (an argument error would name an option) and then
        # stops for want of CUDA: the script must pass that message on.
        binary = os.environ.get("QUARTET")
        if not binary:
            self.skipTest("QUARTET (the quartet program) is not set; CTest sets it")
        if os.path.exists("/dev/nvidia0"):
            self.skipTest("a GPU is present: quartet bench would run")
        with self.assertRaises(tb.BenchError) as caught:
            tb.run_cpp_bench(binary, ["800M", "7B"], ["bf16", "quartet2"], 3, True)
        message = str(caught.exception)
        self.assertIn("failed (exit status", message)
        # The suite's own refusal ("bench: this build has no CUDA backend" or "bench: no CUDA
        # driver/GPU found"), not an argument error.
        self.assertRegex(message, r"bench: (this build has no CUDA backend|no CUDA driver|no usable GPU)")


if __name__ == "__main__":
    unittest.main()
