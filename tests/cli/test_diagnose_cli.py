"""`quartet diagnose CHECKPOINT` (docs/diagnostics.md), run as a user runs it on a tiny model trained
here: the table, diagnose.json and diagnose.png; the statistics on the real activations and
gradients (quartet2's backward products are unbiased against the forward-quantized product, their
bias falling like 1/sqrt(k), and level off against the exact one, as nvidia's wgrad and the
round-to-nearest backward of quartet1 do); and the refusals of bad input.

The statistical checks use the draws' own spread: for an unbiased estimator, z = B bias_B^2 /
mean(e_b^2) is 1 within a few rho = sd(e_b^2) / mean(e_b^2) (tests/train/diagnose_test.cpp says
why); rho is taken from each row's error and error_sd."""
import json
import math
import os
import shutil
import tempfile
import unittest

from cli_case import CliCase, run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS = [f"layers.{b}.{name}" for b in range(2) for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")]
DRAWS = 32


def statistic(row):
    """z and rho of a diagnose.json row (e_b^2's mean and spread from error and error_sd)."""
    b = len(row["k"]) and row["k"][-1]
    mean, sd = row["error"], row["error_sd"]
    mean_sq = mean * mean + sd * sd * (b - 1) / b
    # e^2 = (m + d)^2: its spread is 2 m sd to first order.
    rho = 2 * mean * sd / mean_sq
    return b * row["bias"][-1] ** 2 / mean_sq, rho


class Diagnose(CliCase):
    prefix = "quartet-diagnose-"

    @classmethod
    def setUpClass(cls):
        # One tiny run for every test: 2 x 64 = 128 tokens per micro-batch (RHT-128 fits the wgrad).
        cls.run_dir = tempfile.mkdtemp(prefix="quartet-diagnose-run-")
        p = run("train", "--steps", "6", "--batch", "2", "--seq", "64", "--eval-batches", "1", "--final-eval-batches",
                "1", "--quiet", "--sample-tokens", "0", "--device", "cpu", "--no-plot", "--out", cls.run_dir)
        assert p.returncode == 0, p.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.run_dir)

    def test_table_json_picture_and_statistics(self):
        out = self.path("d")
        p = self.ok("diagnose", self.run_dir, "--draws", str(DRAWS), "--out", out, "--device", "cpu")
        with open(os.path.join(out, "diagnose.json")) as f:
            report = json.load(f)
        with open(os.path.join(out, "diagnose.png"), "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)
        self.assertTrue(os.path.exists(os.path.join(out, "diagnose.gnuplot")))
        self.assertEqual(report["draws"], DRAWS)
        self.assertEqual(report["k"], [1, 2, 4, 8, 16, 32])
        self.assertEqual(report["split"], "validation")
        self.assertEqual((report["batch"], report["seq"], report["trained_recipe"]), (2, 64, "quartet2"))
        recipes = ["quartet2", "nvidia", "tetrajet2", "quartet1", "quartet1-sr"]
        self.assertEqual(list(dict.fromkeys(r["recipe"] for r in report["mean"])), recipes)
        rows = report["rows"]
        for recipe in recipes:
            self.assertEqual(list(dict.fromkeys(r["layer"] for r in rows if r["recipe"] == recipe)), LAYERS)
        # A forward-quantized reference exactly where the backward pass re-uses a forward-quantized
        # operand: nvidia's wgrad rounds the BF16 X^T, so it has only the exact one.
        kinds = {(r["recipe"], r["product"], r["reference"]) for r in rows}
        self.assertIn(("nvidia", "dgrad", "forward_quantized"), kinds)
        self.assertNotIn(("nvidia", "wgrad", "forward_quantized"), kinds)
        self.assertEqual(len(rows), len(LAYERS) * (4 + 3 + 4 + 4 + 4))

        def of(recipe, product, reference):
            return [r for r in rows if (r["recipe"], r["product"], r["reference"]) == (recipe, product, reference)]

        for product in ("dgrad", "wgrad"):
            for r in of("quartet2", product, "forward_quantized") + of("quartet1-sr", product, "forward_quantized"):
                with self.subTest(recipe=r["recipe"], layer=r["layer"], product=product, reference="fwd"):
                    z, rho = statistic(r)
                    self.assertLess(rho, 0.2)  # the power to see the biases below
                    self.assertAlmostEqual(z, 1.0, delta=5 * rho)
                    self.assertAlmostEqual(r["slope"], -0.5, delta=0.1)
            # Levelling off: the forward quantization against the exact product; nvidia's
            # round-to-nearest X^T; quartet1's round-to-nearest backward against its own reference.
            for r in of("quartet2", product, "exact") + of("quartet1", product, "forward_quantized"):
                with self.subTest(recipe=r["recipe"], layer=r["layer"], product=product, reference=r["reference"]):
                    z, rho = statistic(r)
                    self.assertGreater(z, 1 + 5 * rho)
            for r in of("quartet2", product, "exact"):
                self.assertGreater(r["slope"], -0.35)
                self.assertGreater(r["bias_limit"], 0.01)
        for r in of("nvidia", "wgrad", "exact"):
            z, rho = statistic(r)
            self.assertGreater(z, 1 + 5 * rho, r["layer"])
        # The means average the layers' figures.
        for m in report["mean"]:
            layer_rows = of(m["recipe"], m["product"], m["reference"])
            self.assertEqual(m["layers"], len(LAYERS))
            self.assertAlmostEqual(m["error"], sum(r["error"] for r in layer_rows) / len(layer_rows), places=12)
            self.assertAlmostEqual(m["bias"][-1], sum(r["bias"][-1] for r in layer_rows) / len(layer_rows), places=12)
        # The table: one line per mean row, with the error and the bias at each k as in the JSON.
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("quartet diagnose: "), lines[0])
        self.assertIn("validation micro-batch of 2 x 64 tokens", lines[0])
        for m in report["mean"]:
            ref = "exact" if m["reference"] == "exact" else "fwd-quantized"
            line = next(l for l in lines if l.split()[:3] == [m["recipe"], m["product"], ref])
            figures = [float(v) for v in line.replace("|", " ").split()[3:]]
            self.assertAlmostEqual(figures[0], m["error"], places=4)
            for got, want in zip(figures[1:1 + DRAWS.bit_length()], m["bias"]):
                self.assertAlmostEqual(got, want, places=4)
        self.assertIn(os.path.join(out, "diagnose.json"), p.stdout)
        # Progress on stderr.
        self.assertIn("diagnose [", p.stderr)

        # The same draws again give the same figures; --force replaces, without it refused.
        self.refused(["diagnose", self.run_dir, "--out", out], "--force")

    def test_subsets_verbose_and_reproducibility(self):
        args = ["diagnose", self.run_dir, "--draws", "4", "--recipes", "nvidia", "--layers", "o_proj,layers.0.down_proj",
                "--verbose", "--no-plot", "--device", "cpu"]
        a = self.ok(*args, "--out", self.path("a"))
        b = self.ok(*args, "--out", self.path("b"))
        with open(self.path("a", "diagnose.json")) as f:
            ja = json.load(f)
        with open(self.path("b", "diagnose.json")) as f:
            jb = json.load(f)
        self.assertEqual(ja["rows"], jb["rows"])
        self.assertFalse(os.path.exists(self.path("a", "diagnose.png")))
        self.assertEqual(sorted({r["layer"] for r in ja["rows"]}), ["layers.0.down_proj", "layers.0.o_proj",
                                                                      "layers.1.o_proj"])
        # --verbose: a row per layer under each mean row.
        for layer in ("layers.0.o_proj", "layers.1.o_proj", "layers.0.down_proj"):
            self.assertIn(layer, a.stdout)
        self.assertIn("mean of 3", a.stdout)
        # Another seed draws other bits: other figures (the exact product is the same).
        self.ok(*args, "--seed", "99", "--out", self.path("c"))
        with open(self.path("c", "diagnose.json")) as f:
            jc = json.load(f)
        self.assertNotEqual([r["error"] for r in ja["rows"]], [r["error"] for r in jc["rows"]])
        self.assertEqual(jc["seed"], 99)
        self.assertIn("mean of 3", b.stdout)
        # Without --out: the table only.
        p = self.ok("diagnose", self.run_dir, "--draws", "2", "--recipes", "quartet2", "--layers", "layers.1.qkv_proj",
                    "--device", "cpu")
        self.assertIn("quartet2", p.stdout)
        self.assertNotIn("wrote", p.stdout)

    def test_bad_input(self):
        missing = self.path("nothing")
        self.expect(1, ["diagnose", missing], missing)
        # A corrupt checkpoint: its weights cut short.
        broken = self.path("broken")
        shutil.copytree(self.run_dir, broken)
        latest = os.path.join(broken, "checkpoints", open(os.path.join(broken, "checkpoints", "latest")).read().strip())
        weights = os.path.join(latest, "model.safetensors")
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 2)
        self.expect(1, ["diagnose", broken, "--draws", "2", "--device", "cpu"], "model.safetensors")
        # Command-line errors (exit 2), before anything is read.
        self.refused(["diagnose", self.run_dir, "--recipes", "quartet3"], "unknown recipe 'quartet3'")
        self.refused(["diagnose", self.run_dir, "--recipes", "bf16"], "bf16", "nothing to measure")
        self.refused(["diagnose", self.run_dir, "--recipes", "nvidia,nvidia"], "twice")
        self.refused(["diagnose", self.run_dir, "--recipes", "nvidia,"], "empty entry")
        for draws in ("1", "0", "x", "100000"):
            self.refused(["diagnose", self.run_dir, "--draws", draws], "--draws")
        self.refused(["diagnose", self.run_dir, "--layers", "attention"], "--layers", "'attention'")
        self.refused(["diagnose", self.run_dir, "--device", "tpu"], "--device")
        with open(self.path("file"), "w") as f:
            f.write("x")
        self.refused(["diagnose", self.run_dir, "--out", self.path("file")], "not a folder")
        # Errors only the checkpoint reveals (exit 1): a block it lacks; a micro-batch whose 64 tokens
        # RHT-128 does not divide (the layer and the dimension are named); data of another tokenizer.
        self.expect(1, ["diagnose", self.run_dir, "--layers", "2", "--device", "cpu"], "block 2", "2 blocks")
        self.expect(1, ["diagnose", self.run_dir, "--batch", "1", "--device", "cpu"], "RHT-128", "qkv_proj",
                    "tokens per micro-batch")
        self.expect(1, ["diagnose", self.run_dir, "--seq", "100000", "--device", "cpu"], "--seq 100000")
        self.expect(1, ["diagnose", self.run_dir, "--data", "embedded:nothing-such", "--device", "cpu"], "nothing-such")


if __name__ == "__main__":
    unittest.main()
