"""`quartet train --diagnostics N` (docs/diagnostics.md), run as a user runs it: the option's
checks, the records in metrics.jsonl, diagnostics.png, and the readers of metrics.jsonl (the
training plot, `quartet plot`, a resumed run) that must keep working beside the new records."""
import json
import os
import unittest

from cli_case import CliCase

SMALL = ["--batch", "2", "--seq", "64", "--eval-batches", "1", "--final-eval-batches", "1", "--quiet",
         "--sample-tokens", "0", "--device", "cpu"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS = {f"layers.{b}.{name}" for b in range(2) for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def datablock_steps(script):
    lines = script.split("\n")
    start = lines.index("$diagnostics << EOD") + 1
    end = lines.index("EOD", start)
    return [int(line.split()[0]) for line in lines[start:end] if not line.startswith("#")]


class Diagnostics(CliCase):
    prefix = "quartet-diagnostics-"

    def test_bad_values_are_refused_naming_the_option(self):
        for value in ("-1", "1.5", "x", ""):
            with self.subTest(value=value):
                self.refused(["train", *SMALL, "--diagnostics", value, "--out", self.path("run")], "--diagnostics")
        self.refused(["train", *SMALL, "--diagnostics", "-1", "--out", self.path("run")], "must be in [0,")
        # Without --out there is nowhere to write: refused rather than ignored.
        self.refused(["train", *SMALL, "--diagnostics", "2"], "--diagnostics needs --out")
        self.assertFalse(os.path.exists(self.path("run")))
        # 0 is off: accepted anywhere.
        self.ok("train", *SMALL, "--steps", "1", "--recipe", "bf16", "--diagnostics", "0")
        # --diagnostics-tokens: 0 (all) or a multiple of 128, so that transposed operands keep
        # whole scale groups and rotation blocks.
        for value in ("100", "-128", "x"):
            with self.subTest(tokens=value):
                self.refused(["train", *SMALL, "--diagnostics", "2", "--diagnostics-tokens", value, "--out",
                              self.path("run")], "--diagnostics-tokens")
        self.refused(["train", *SMALL, "--diagnostics", "2", "--diagnostics-tokens", "192", "--out", self.path("run")],
                     "--diagnostics-tokens must be 0 (whole tensors) or a multiple of 128, got 192")
        self.assertFalse(os.path.exists(self.path("run")))

    def test_records_the_picture_and_the_other_readers(self):
        out = self.path("run")
        p = self.ok("train", *SMALL, "--steps", "4", "--diagnostics", "2", "--out", out)
        lines = metrics(out)
        self.assertEqual([(l.get("kind", "step"), l["step"]) for l in lines],
                         [("step", 1), ("step", 2), ("diagnostics", 2), ("step", 3), ("step", 4), ("diagnostics", 4)])
        record = lines[2]
        self.assertEqual(record["token_limit"], 1024)  # the default
        self.assertEqual(set(record["layers"]), LAYERS)
        self.assertEqual(set(record["mean"]), {"forward", "dgrad", "wgrad"})
        self.assertEqual(set(record["mean"]["dgrad"]), {"e_err", "wt_err", "out_err", "cosine", "norm_ratio"})
        self.assertGreater(record["mean"]["wgrad"]["cosine"], 0.8)
        # The picture, and the script that holds its data.
        with open(os.path.join(out, "diagnostics.png"), "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)
        with open(os.path.join(out, "diagnostics.gnuplot")) as f:
            self.assertEqual(datablock_steps(f.read()), [2, 4])
        self.assertIn(os.path.join(out, "diagnostics.png"), p.stdout)
        # The training picture and `quartet plot` read the step lines and skip the records.
        self.assertTrue(os.path.exists(os.path.join(out, "training.png")))
        self.ok("plot", out, "--out", self.path("both.png"))

        # A run control: it may be given (or changed) on --resume; the records up to the
        # checkpoint stay, and the resumed steps add theirs.
        self.ok("train", "--resume", out, "--steps", "6", "--diagnostics", "3", "--diagnostics-tokens", "0", "--quiet",
                "--sample-tokens", "0")
        records = [l for l in metrics(out) if l.get("kind") == "diagnostics"]
        self.assertEqual([l["step"] for l in records], [2, 4, 6])
        self.assertEqual([l["token_limit"] for l in records], [1024, 1024, 0])
        with open(os.path.join(out, "diagnostics.gnuplot")) as f:
            self.assertEqual(datablock_steps(f.read()), [2, 4, 6])

    def test_progress_shows_each_measured_step_and_its_cost(self):
        # Not a terminal here: the progress prints about every twentieth step, and every measured one.
        args = [a for a in SMALL if a != "--quiet"]
        p = self.ok("train", *args, "--steps", "40", "--diagnostics", "7", "--no-plot", "--out", self.path("run"))
        lines = [l for l in p.stderr.splitlines() if l.startswith("train [")]
        measured = [l for l in lines if "| diagnostics " in l]
        self.assertEqual([l.split("]")[0] for l in measured], [f"train [{s}/40" for s in (7, 14, 21, 28, 35)], p.stderr)
        for line in measured:
            self.assertRegex(line, r"\| diagnostics \d+\.\ds  elapsed")
        self.assertIn("train [1/40]", p.stderr)  # the usual lines go on beside them
        self.assertNotIn("diagnostics", lines[0])

    def test_bf16_has_nothing_to_measure(self):
        out = self.path("run")
        p = self.ok("train", *SMALL, "--steps", "2", "--recipe", "bf16", "--diagnostics", "1", "--out", out)
        self.assertEqual(p.stderr.count("nothing to measure"), 1, p.stderr)
        self.assertTrue(all("kind" not in l for l in metrics(out)))
        self.assertFalse(os.path.exists(os.path.join(out, "diagnostics.png")))


if __name__ == "__main__":
    unittest.main()
