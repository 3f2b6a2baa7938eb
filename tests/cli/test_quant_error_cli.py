"""The `quartet quant-error` command, run as a user runs it (QUARTET names the binary)."""
import json
import os
import subprocess
import unittest

QUARTET = os.environ["QUARTET"]
NAMES = ["rtn", "four_over_six", "square16", "sr", "ms_eden_g16", "ms_eden_g128",
         "mxfp4_quest", "mxfp4_rtn", "mxfp4_sr"]


def run(*args):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=300)


class QuantErrorCommand(unittest.TestCase):
    def test_json_has_every_quantizer_and_the_documented_keys(self):
        p = run("quant-error", "--rows", "2048", "--json", "--draws", "2")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = json.loads(p.stdout)
        self.assertEqual([r["quantizer"] for r in rows], NAMES)
        for r in rows:
            for key in ("rel_mse", "eff_bits", "misalignment", "rel_mse_mean_of_draws"):
                self.assertIn(key, r)
            self.assertGreater(r["rel_mse"], 0)
            self.assertAlmostEqual(r["eff_bits"], -0.5 * __import__("math").log2(r["rel_mse"]), places=9)
        self.assertIn("[18/18]", p.stderr, "the progress line counts quantizer draws")

    def test_without_draws_there_is_no_mean_of_draws_key(self):
        p = run("quant-error", "--rows", "256", "--json", "--quantizers", "sr,ms_eden_g16")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = json.loads(p.stdout)
        self.assertEqual([r["quantizer"] for r in rows], ["sr", "ms_eden_g16"])
        self.assertNotIn("rel_mse_mean_of_draws", rows[0])

    def test_table_output(self):
        p = run("quant-error", "--rows", "512", "--dist", "laplace", "--seed", "3")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("laplace", p.stdout)
        self.assertIn("misalignment", p.stdout)
        for name in NAMES:
            self.assertIn(name, p.stdout)

    def test_same_seed_same_numbers_other_seed_other_numbers(self):
        a = json.loads(run("quant-error", "--rows", "256", "--json", "--quantizers", "sr").stdout)
        b = json.loads(run("quant-error", "--rows", "256", "--json", "--quantizers", "sr").stdout)
        c = json.loads(run("quant-error", "--rows", "256", "--json", "--quantizers", "sr", "--seed", "5").stdout)
        self.assertEqual(a, b)
        self.assertNotEqual(a[0]["rel_mse"], c[0]["rel_mse"])

    def expect_error(self, args, *fragments):
        p = run(*args)
        self.assertNotEqual(p.returncode, 0, f"{args} should fail")
        self.assertEqual(p.stdout.strip(), "", "nothing on stdout when the command fails")
        for f in fragments:
            self.assertIn(f, p.stderr, p.stderr)

    def test_bad_input_gets_a_clear_error(self):
        self.expect_error(["quant-error", "--dist", "cauchy"], "cauchy", "gaussian")
        self.expect_error(["quant-error", "--rows", "0"], "--rows")
        self.expect_error(["quant-error", "--rows", "many"], "--rows")
        self.expect_error(["quant-error", "--draws", "0"], "--draws")
        self.expect_error(["quant-error", "--quantizers", "rtn,nope"], "nope", "ms_eden_g16")
        self.expect_error(["quant-error", "--quantizers", "rtn,,sr"], "empty")
        self.expect_error(["quant-error", "--bogus"], "--bogus")
        self.expect_error(["no-such-command"], "no-such-command")
        self.expect_error([], "subcommand")

    def test_help(self):
        p = run("quant-error", "--help")
        self.assertEqual(p.returncode, 0)
        for option in ("--rows", "--dist", "--draws", "--seed", "--json", "--quantizers"):
            self.assertIn(option, p.stdout)


if __name__ == "__main__":
    unittest.main()
