"""`quartet compare --from`: the comparison of finished runs made separately, several seeds per
recipe, as the GPU accuracy campaign gathers them. The expected numbers are computed here from
each run's own run.json, not by the command."""
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]
TINY = ["--steps", "3", "--batch", "4", "--seq", "32", "--eval-every", "0", "--final-eval-batches", "2",
        "--device", "cpu", "--no-plot"]


def load(path):
    with open(path) as f:
        return json.load(f)


def run(*args):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=600)


class CompareGather(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="quartet-gather-")
        cls.runs = {}
        for name, args in [("bf16-s1", ["--recipe", "bf16", "--seed", "1"]),
                           ("bf16-s2", ["--recipe", "bf16", "--seed", "2"]),
                           ("quartet2-s1", ["--recipe", "quartet2", "--seed", "1"]),
                           ("quartet2-s2", ["--recipe", "quartet2", "--seed", "2"]),
                           ("quartet2-no46-s1", ["--recipe", "quartet2", "--four-over-six", "off", "--seed", "1"])]:
            out = os.path.join(cls.dir, name)
            p = run("train", *TINY, *args, "--out", out)
            assert p.returncode == 0, p.stderr
            cls.runs[name] = out

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def val_loss(self, name):
        record = load(os.path.join(self.runs[name], "run.json"))
        self.assertEqual(record["steps"], record["total_steps"])
        self.assertEqual(record["config"]["seed"], int(name[-1]))
        return record["val_loss"]

    def test_a_finished_run_leaves_run_json_with_its_config(self):
        record = load(os.path.join(self.runs["quartet2-no46-s1"], "run.json"))
        self.assertEqual(record["config"]["recipe"], "quartet2")
        self.assertFalse(record["config"]["recipe_options"]["four_over_six"])
        self.assertEqual(record["val_step"], 3)
        with open(os.path.join(self.runs["quartet2-no46-s1"], "metrics.jsonl")) as f:
            metrics = [json.loads(line) for line in f]
        self.assertAlmostEqual(record["val_loss"], metrics[-1]["val_loss"], places=12)

    def test_the_table_groups_seeds_and_gives_gaps_in_percent(self):
        out = os.path.join(self.dir, "compare")
        p = run("compare", "--from", *self.runs.values(), "--out", out, "--no-plot")
        self.assertEqual(p.returncode, 0, p.stderr)
        report = load(os.path.join(out, "compare.json"))
        bf16 = [self.val_loss("bf16-s1"), self.val_loss("bf16-s2")]
        q2 = [self.val_loss("quartet2-s1"), self.val_loss("quartet2-s2")]
        bf16_mean = sum(bf16) / 2
        rows = {(r["recipe"], r["seed"]): r for r in report["results"]}
        self.assertEqual(set(rows), {("bf16", 1), ("bf16", 2), ("quartet2", 1), ("quartet2", 2), ("quartet2-no46", 1)})
        for (recipe, seed), name in [(("quartet2", 2), "quartet2-s2"), (("quartet2-no46", 1), "quartet2-no46-s1")]:
            row = rows[(recipe, seed)]
            self.assertAlmostEqual(row["val_loss"], self.val_loss(name), places=12)
            self.assertAlmostEqual(row["gap_to_bf16"], 100 * (self.val_loss(name) - bf16_mean) / bf16_mean, places=9)
        summary = {s["recipe"]: s for s in report["summary"]}
        self.assertEqual(report["summary"][0]["recipe"], "bf16")
        sd = lambda v: math.sqrt(sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1))
        q2_mean = sum(q2) / 2
        self.assertAlmostEqual(summary["quartet2"]["val_loss_mean"], q2_mean, places=12)
        self.assertAlmostEqual(summary["quartet2"]["val_loss_sd"], sd(q2), places=12)
        self.assertAlmostEqual(summary["quartet2"]["gap_to_bf16"], 100 * (q2_mean - bf16_mean) / bf16_mean, places=9)
        se = 100 * math.sqrt(sd(q2) ** 2 / 2 + sd(bf16) ** 2 / 2) / bf16_mean
        self.assertAlmostEqual(summary["quartet2"]["gap_to_bf16_se"], se, places=9)
        # One run has no spread: no standard deviation nor standard error, rather than 0.
        self.assertIsNone(summary["quartet2-no46"]["val_loss_sd"])
        self.assertIsNone(summary["quartet2-no46"]["gap_to_bf16_se"])
        gap_one = 100 * (self.val_loss("quartet2-no46-s1") - bf16_mean) / bf16_mean
        self.assertRegex(p.stdout, r"quartet2-no46\s+1\s+" + re.escape(f"{self.val_loss('quartet2-no46-s1'):.4f} ± ?")
                         + r"\s+" + re.escape(f"{gap_one:+.2f}% ± ?"))
        # The one pair of recipes besides bf16: quartet2-no46's gap minus quartet2's, and their
        # ratio. One no46 run has no spread to estimate: no standard error, rather than 0.
        gap_q2 = 100 * (q2_mean - bf16_mean) / bf16_mean
        gap_no46 = 100 * (self.val_loss("quartet2-no46-s1") - bf16_mean) / bf16_mean
        (difference,) = report["gap_differences"]
        self.assertEqual((difference["recipe"], difference["minus"]), ("quartet2-no46", "quartet2"))
        self.assertAlmostEqual(difference["difference"], gap_no46 - gap_q2, places=9)
        self.assertIsNone(difference["se"])
        self.assertIsNone(difference["ratio_se"])
        self.assertAlmostEqual(difference["ratio"], gap_no46 / gap_q2, places=9)
        self.assertIn(f"quartet2-no46 - quartet2: {gap_no46 - gap_q2:+.2f} (a recipe of one run: no standard error)",
                      p.stdout)
        self.assertEqual(report["config"]["steps"], 3)
        self.assertNotIn("seed", report["config"])

    def test_gaps_are_also_taken_seed_by_seed(self):
        # Each run against bf16's run of its own seed (the same initialisation and data order),
        # averaged over the seeds both ran; a recipe pair over the seeds all three ran.
        out = os.path.join(self.dir, "compare-paired")
        p = run("compare", "--from", *self.runs.values(), "--out", out, "--no-plot")
        self.assertEqual(p.returncode, 0, p.stderr)
        report = load(os.path.join(out, "compare.json"))
        summary = {s["recipe"]: s for s in report["summary"]}
        loss = {n: self.val_loss(n) for n in self.runs}
        gap = lambda name, seed: 100 * (loss[name] - loss[f"bf16-s{seed}"]) / loss[f"bf16-s{seed}"]
        q2 = [gap("quartet2-s1", 1), gap("quartet2-s2", 2)]
        mean = sum(q2) / 2
        se = math.sqrt(sum((g - mean) ** 2 for g in q2)) / math.sqrt(2)  # sd over n - 1 = 1, over sqrt(2)
        self.assertEqual(summary["quartet2"]["paired_seeds"], [1, 2])
        self.assertAlmostEqual(summary["quartet2"]["paired_gap_to_bf16"], mean, places=9)
        self.assertAlmostEqual(summary["quartet2"]["paired_gap_to_bf16_se"], se, places=9)
        # One shared seed: its gap, and no standard error rather than 0.
        self.assertEqual(summary["quartet2-no46"]["paired_seeds"], [1])
        self.assertAlmostEqual(summary["quartet2-no46"]["paired_gap_to_bf16"], gap("quartet2-no46-s1", 1), places=9)
        self.assertIsNone(summary["quartet2-no46"]["paired_gap_to_bf16_se"])
        self.assertNotIn("paired_gap_to_bf16", summary["bf16"])
        self.assertIn(f"{mean:+.2f}% ± {se:.2f}% (2 seeds)", p.stdout)
        self.assertIn(f"{gap('quartet2-no46-s1', 1):+.2f}% ± ? (1 seed)", p.stdout)
        (d,) = report["gap_differences"]
        self.assertEqual(d["paired_seeds"], [1])
        self.assertAlmostEqual(d["paired_difference"], gap("quartet2-no46-s1", 1) - gap("quartet2-s1", 1), places=9)
        self.assertIsNone(d["paired_se"])
        self.assertIn(f"seed by seed {d['paired_difference']:+.2f} (1 seed)", p.stdout)
        # Without bf16's run of a seed, that seed is not paired: here no seed is.
        out = os.path.join(self.dir, "compare-unpaired")
        p = run("compare", "--from", self.runs["bf16-s1"], self.runs["quartet2-s2"], "--out", out, "--no-plot")
        self.assertEqual(p.returncode, 0, p.stderr)
        (bf16, q2_row) = load(os.path.join(out, "compare.json"))["summary"]
        self.assertNotIn("paired_gap_to_bf16", q2_row)
        self.assertNotIn("seed by seed", p.stdout)

    def test_gap_differences_carry_standard_errors_from_the_seeds(self):
        second = os.path.join(self.dir, "quartet2-no46-s2")
        if not os.path.exists(os.path.join(second, "run.json")):
            p = run("train", *TINY, "--recipe", "quartet2", "--four-over-six", "off", "--seed", "2", "--out", second)
            self.assertEqual(p.returncode, 0, p.stderr)
        names = ["bf16-s1", "bf16-s2", "quartet2-s1", "quartet2-s2", "quartet2-no46-s1"]
        out = os.path.join(self.dir, "compare-se")
        p = run("compare", "--from", *[self.runs[n] for n in names], second, "--out", out, "--no-plot")
        self.assertEqual(p.returncode, 0, p.stderr)
        (d,) = load(os.path.join(out, "compare.json"))["gap_differences"]
        losses = {n: self.val_loss(n) for n in names}
        losses["quartet2-no46-s2"] = load(os.path.join(second, "run.json"))["val_loss"]
        mean = lambda v: sum(v) / len(v)
        se = lambda v: math.sqrt(sum((x - mean(v)) ** 2 for x in v) / (len(v) - 1)) / math.sqrt(len(v))
        bf16 = [losses["bf16-s1"], losses["bf16-s2"]]
        q2 = [losses["quartet2-s1"], losses["quartet2-s2"]]
        no46 = [losses["quartet2-no46-s1"], losses["quartet2-no46-s2"]]
        m0 = mean(bf16)
        self.assertAlmostEqual(d["difference"], 100 * (mean(no46) - mean(q2)) / m0, places=9)
        self.assertAlmostEqual(d["se"], 100 * math.sqrt(se(q2) ** 2 + se(no46) ** 2) / m0, places=9)
        r = (mean(no46) - m0) / (mean(q2) - m0)
        self.assertAlmostEqual(d["ratio"], r, places=9)
        ratio_se = math.sqrt(se(no46) ** 2 + r * r * se(q2) ** 2 + (r - 1) ** 2 * se(bf16) ** 2) / abs(mean(q2) - m0)
        self.assertAlmostEqual(d["ratio_se"], ratio_se, places=9)
        self.assertIn(f"gap ratio {r:.2f} ± {ratio_se:.2f}", p.stdout)

    def test_bf16_forward_evaluations_join_the_table(self):
        # Copies of the quartet2 runs with their models evaluated in BF16 by `quartet eval`, as the
        # campaign's script leaves them (eval-bf16.json); the bf16 runs have none.
        copies = {}
        for name in ("quartet2-s1", "quartet2-s2"):
            copies[name] = os.path.join(self.dir, "with-eval", name)
            shutil.copytree(self.runs[name], copies[name], dirs_exist_ok=True)
            p = run("eval", copies[name], "--recipe", "bf16", "--device", "cpu", "--json")
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(copies[name], "eval-bf16.json"), "w") as f:
                f.write(p.stdout)
        evaluated = [load(os.path.join(copies[n], "eval-bf16.json"))["loss"] for n in ("quartet2-s1", "quartet2-s2")]
        out = os.path.join(self.dir, "compare-bf16-forward")
        p = run("compare", "--from", self.runs["bf16-s1"], self.runs["bf16-s2"], *copies.values(), "--out", out,
                "--no-plot")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("gap, bf16 forward", p.stdout)
        report = load(os.path.join(out, "compare.json"))
        bf16_mean = (self.val_loss("bf16-s1") + self.val_loss("bf16-s2")) / 2
        summary = {s["recipe"]: s for s in report["summary"]}
        mean = sum(evaluated) / 2
        self.assertAlmostEqual(summary["quartet2"]["bf16_forward_val_loss_mean"], mean, places=12)
        self.assertAlmostEqual(summary["quartet2"]["bf16_forward_gap_to_bf16"], 100 * (mean - bf16_mean) / bf16_mean,
                               places=9)
        self.assertNotIn("bf16_forward_val_loss_mean", summary["bf16"])
        rows = {(r["recipe"], r["seed"]): r for r in report["results"]}
        self.assertEqual(rows[("quartet2", 2)]["bf16_forward_val_loss"], evaluated[1])
        self.assertNotEqual(evaluated[1], self.val_loss("quartet2-s2"), "a BF16 forward pass is not quartet2's")

        # An evaluation of other windows, or of another recipe, is refused, naming the file.
        bad = copies["quartet2-s1"]
        for args, fragment in [(["--batches", "1"], "on 1 windows of 4 x 32; the run's final evaluation is step 3 on 2"),
                               (["--recipe", "nvidia"], 'an evaluation with recipe "nvidia", not bf16'),
                               (["other-data"], 'it evaluated data "elsewhere"; the run trained on "embedded:austen"')]:
            if args == ["other-data"]:  # another corpus's evaluation, as its JSON would name it
                evaluation = dict(load(os.path.join(copies["quartet2-s2"], "eval-bf16.json")), data="elsewhere")
                evaluation["step"] = 3
                text = json.dumps(evaluation)
            else:
                p = run("eval", bad, "--device", "cpu", "--json",
                        *(["--recipe", "bf16"] if "--recipe" not in args else []), *args)
                self.assertEqual(p.returncode, 0, p.stderr)
                text = p.stdout
            with open(os.path.join(bad, "eval-bf16.json"), "w") as f:
                f.write(text)
            p = run("compare", "--from", self.runs["bf16-s1"], bad, "--out", os.path.join(self.dir, "refused"),
                    "--no-plot", "--force")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(os.path.join(bad, "eval-bf16.json"), p.stderr)
            self.assertIn(fragment, p.stderr)

    def test_the_plot_is_drawn(self):
        if shutil.which("gnuplot") is None:
            self.skipTest("gnuplot is not installed")
        out = os.path.join(self.dir, "plotted")
        p = run("compare", "--from", self.runs["bf16-s1"], self.runs["quartet2-s1"], "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(out, "loss.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_runs_not_trained_alike_or_unfinished_are_refused_by_name(self):
        other = os.path.join(self.dir, "other-lr")
        p = run("train", *TINY, "--recipe", "nvidia", "--lr", "0.001", "--out", other)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run("compare", "--from", self.runs["bf16-s1"], other, "--out", os.path.join(self.dir, "x"), "--no-plot")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("were not trained alike: lr is", p.stderr)
        unfinished = os.path.join(self.dir, "unfinished")
        shutil.copytree(self.runs["bf16-s1"], unfinished)
        record = load(os.path.join(unfinished, "run.json"))
        record["steps"] = 2
        with open(os.path.join(unfinished, "run.json"), "w") as f:
            json.dump(record, f)
        # A diverged run keeps its run.json with the non-finite loss written as null.
        diverged = os.path.join(self.dir, "diverged")
        shutil.copytree(self.runs["bf16-s2"], diverged)
        record = load(os.path.join(diverged, "run.json"))
        record["val_loss"] = None
        with open(os.path.join(diverged, "run.json"), "w") as f:
            json.dump(record, f)
        for args, fragment in [
            ([unfinished], "stopped at step 2 of 3"),
            ([self.runs["bf16-s1"], diverged], "diverged (its final validation loss is not finite)"),
            ([self.runs["bf16-s1"], self.runs["bf16-s1"]], "a second bf16 run with seed 1"),
            ([self.dir], "no run.json"),
        ]:
            p = run("compare", "--from", *args, "--out", os.path.join(self.dir, "y"), "--no-plot")
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(fragment, p.stderr, args)
            self.assertNotIn("internal error", p.stderr)
        p = run("compare", "--from", self.runs["bf16-s1"], "--steps", "5", "--out", os.path.join(self.dir, "z"))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--steps has no effect with --from", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "y", "compare.json")))


if __name__ == "__main__":
    unittest.main()
