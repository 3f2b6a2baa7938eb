"""`quartet plot` and the picture `quartet train --out` draws at its end: the PNG, the gnuplot
script beside it (which holds the data it draws) and every error a user can meet."""
import json
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]
SMALL = ["--steps", "4", "--batch", "2", "--seq", "64", "--eval-every", "2", "--eval-batches", "1",
         "--final-eval-batches", "1", "--quiet", "--sample-tokens", "0", "--recipe", "bf16"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args, env=None):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=600, env=env)


def steps(n, loss0, val_every):
    """n metrics lines as the trainer writes them, with values chosen here (not by the program)."""
    rows = []
    for s in range(1, n + 1):
        r = {"step": s, "tokens": 2048 * s, "loss": loss0 - 0.0625 * s, "lr": 0.001 * s / n,
             "grad_norm": 1.5 / s, "tokens_per_s": 1000.0 + s, "skipped": 0}
        if s % val_every == 0:
            r["val_loss"] = loss0 - 0.05 * s
            r["val_bpb"] = 1.25
        rows.append(r)
    return rows


def write_run(folder, rows, tail=""):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows) + tail)


def read(path):
    with open(path) as f:
        return f.read()


def datablock(script, name):
    """The rows of gnuplot datablock $name in the script, as lists of floats (NaN stays NaN)."""
    lines = script.split("\n")
    start = lines.index(f"${name} << EOD") + 1
    end = lines.index("EOD", start)
    return [[float(x) for x in line.split()] for line in lines[start:end] if not line.startswith("#")]


class Plot(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-plot-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def assert_png(self, path):
        """A complete PNG of the size the script asks for, with something drawn in it."""
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], PNG_MAGIC)
        self.assertEqual(data[12:16], b"IHDR")
        self.assertEqual(struct.unpack(">II", data[16:24]), (1400, 900))
        self.assertEqual(data[-8:-4], b"IEND")
        # An empty 1400x900 canvas compresses to a few KB; four panels of curves and text do not.
        self.assertGreater(len(data), 20000)

    def expect_error(self, args, code, *fragments, env=None):
        p = run(*args, env=env)
        self.assertEqual(p.returncode, code, p.stderr)
        for f in fragments:
            self.assertIn(f, p.stderr)
        return p

    def test_one_run_draws_training_png_beside_its_script(self):
        rows = steps(30, 5.0, 10)
        write_run(self.path("alpha"), rows)
        p = run("plot", self.path("alpha"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assert_png(self.path("alpha", "training.png"))
        script = read(self.path("alpha", "training.gnuplot"))
        self.assertIn("set output 'training.png'", script)
        self.assertEqual(datablock(script, "train1"),
                         [[r["step"], r["loss"], r["lr"], r["grad_norm"], r["tokens_per_s"]] for r in rows])
        self.assertEqual(datablock(script, "val1"), [[s, 5.0 - 0.05 * s] for s in (10, 20, 30)])
        self.assertIn("'alpha (train)'", script)
        self.assertIn("'alpha (val)'", script)
        self.assertIn(self.path("alpha", "training.png"), p.stdout)

    def test_several_runs_share_one_picture_one_colour_each(self):
        a, b = steps(20, 5.0, 5), steps(12, 4.0, 4)
        write_run(self.path("alpha"), a)
        write_run(self.path("beta_run"), b)
        out = self.path("both.png")
        p = run("plot", self.path("alpha"), self.path("beta_run"), "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assert_png(out)
        script = read(self.path("both.gnuplot"))
        self.assertEqual([row[1] for row in datablock(script, "train1")], [r["loss"] for r in a])
        self.assertEqual([row[1] for row in datablock(script, "train2")], [r["loss"] for r in b])
        self.assertEqual([row[0] for row in datablock(script, "val2")], [4, 8, 12])
        # Run 2 is drawn in its own linetype (colour) in every panel, labelled by its folder's name:
        # train and validation loss, learning rate, gradient norm, throughput.
        self.assertEqual(script.count("$train2 using"), 4)
        self.assertEqual(script.count("$val2 using"), 1)
        self.assertEqual(script.count("lt 2 title 'beta_run"), 5)
        self.assertNotIn("lt 1 title 'beta_run", script)
        # Neither run folder got a picture of its own.
        self.assertFalse(os.path.exists(self.path("alpha", "training.png")))

    def test_non_finite_values_become_gaps_and_quotes_stay_in_the_label(self):
        rows = steps(6, 5.0, 3)
        rows[2]["loss"] = None  # how the trainer's JSON writer records a NaN or infinite loss
        rows[2]["grad_norm"] = None
        run_dir = self.path("it's")
        write_run(run_dir, rows)
        p = run("plot", run_dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        script = read(os.path.join(run_dir, "training.gnuplot"))
        self.assertIn("3 NaN 0.0005 NaN 1003\n", script)
        self.assertIn("title 'it''s (train)'", script)
        self.assert_png(os.path.join(run_dir, "training.png"))

    def test_a_line_break_in_a_folder_name_cannot_add_gnuplot_commands(self):
        run_dir = self.path("evil\nsystem('touch PWNED')")
        write_run(run_dir, steps(4, 5.0, 2))
        out = self.path("evil.png")
        p = run("plot", run_dir, "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertFalse(os.path.exists(self.path("PWNED")))
        script = read(self.path("evil.gnuplot"))
        self.assertFalse([line for line in script.splitlines() if line.startswith("system")], script[:300])
        self.assert_png(out)

    def test_an_existing_picture_is_replaced(self):
        write_run(self.path("alpha"), steps(8, 5.0, 4))
        out = self.path("old.png")
        with open(out, "w") as f:
            f.write("an older picture")
        p = run("plot", self.path("alpha"), "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assert_png(out)

    def test_a_torn_last_line_is_left_out_with_a_note(self):
        rows = steps(8, 5.0, 4)
        write_run(self.path("alpha"), rows, tail='{"step": 9, "tokens": 1')
        p = run("plot", self.path("alpha"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("last line is incomplete", p.stderr)
        script = read(self.path("alpha", "training.gnuplot"))
        self.assertEqual([row[0] for row in datablock(script, "train1")], list(range(1, 9)))

    def test_bad_runs_are_named(self):
        os.makedirs(self.path("nometrics"))
        self.expect_error(["plot", self.path("nometrics")], 1, "nometrics holds no metrics.jsonl")
        self.expect_error(["plot", self.path("missing")], 1, "missing: no such folder")
        write_run(self.path("empty"), [])
        self.expect_error(["plot", self.path("empty")], 1, "metrics.jsonl holds no steps")
        rows = [json.dumps(r) for r in steps(3, 5.0, 2)]
        for name, lines, message in [
                ("corrupt", [rows[0], "{not json", rows[2]], "corrupt/metrics.jsonl line 2: not JSON"),
                ("nolr", [rows[0], rows[1].replace('"lr"', '"lrx"')], 'nolr/metrics.jsonl line 2: no "lr" field'),
                ("text", [rows[0].replace('"loss": 4.9375', '"loss": "low"')],
                 'text/metrics.jsonl line 1: "loss" is not a number'),
                ("backwards", [rows[1], rows[0]], "backwards/metrics.jsonl line 2: step 1 does not follow step 2"),
                ("array", ["[1, 2]"], "array/metrics.jsonl line 1: not a JSON object")]:
            os.makedirs(self.path(name))
            with open(self.path(name, "metrics.jsonl"), "w") as f:
                f.write("\n".join(lines) + "\n")
            self.expect_error(["plot", self.path(name)], 1, message)
            self.assertFalse(os.path.exists(self.path(name, "training.png")), name)

    def test_bad_command_lines_are_usage_errors(self):
        write_run(self.path("a"), steps(4, 5.0, 2))
        write_run(self.path("b"), steps(4, 5.0, 2))
        self.expect_error(["plot"], 2, "RUN")
        self.expect_error(["plot", self.path("a"), self.path("b")], 2, "2 runs given", "--out FILE.png")
        self.expect_error(["plot", self.path("a"), "--out", self.path("x.jpg")], 2, "must name a .png file")
        self.expect_error(["plot", self.path("a"), "--out", self.path("no", "x.png")], 2, "does not exist")
        self.expect_error(["plot", self.path("a"), self.path("a") + "/", "--out", self.path("x.png")], 2,
                          "given twice")

    def test_without_gnuplot_it_says_how_to_get_it(self):
        write_run(self.path("a"), steps(4, 5.0, 2))
        env = dict(os.environ, PATH=self.path("empty-path"))
        self.expect_error(["plot", self.path("a")], 1, "gnuplot is not installed (Debian: apt-get install gnuplot-nox)",
                          env=env)
        self.assertFalse(os.path.exists(self.path("a", "training.png")))


def diagnose_report(mean):
    """A diagnose.json as `quartet diagnose --out` writes it, with mean rows chosen here."""
    return {"checkpoint": "run/checkpoints/step-000010", "step": 10, "trained_recipe": "bf16", "draws": 8,
            "k": [1, 2, 4, 8], "mean": mean, "rows": []}


def mean_row(recipe, product, reference, bias):
    return {"recipe": recipe, "layers": 2, "product": product, "reference": reference, "error": 0.5,
            "k": [1, 2, 4, 8], "bias": bias, "slope": -0.5, "bias_limit": 0.01}


class PlotDiagnose(unittest.TestCase):
    """`quartet plot --diagnose`: the picture of a diagnose.json measured where there was no gnuplot."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-plot-diagnose-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def write(self, name, report):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(report if isinstance(report, str) else json.dumps(report))
        return path

    def test_draws_diagnose_png_beside_the_json_with_its_values(self):
        mean = [mean_row("quartet2", "dgrad", "exact", [0.5, 0.25, 0.125, None]),
                mean_row("quartet2", "wgrad", "forward_quantized", [0.4, 0.3, 0.2, 0.1]),
                mean_row("nvidia", "dgrad", "exact", [0.8, 0.7, 0.6, 0.5])]
        path = self.write("diagnose.json", diagnose_report(mean))
        p = run("plot", "--diagnose", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.dir, "diagnose.png"), "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)
        script = read(os.path.join(self.dir, "diagnose.gnuplot"))
        rows = datablock(script, "bias")
        self.assertEqual([r[0] for r in rows], [1, 2, 4, 8])
        self.assertEqual([r[1:] for r in rows[:3]], [[0.5, 0.4, 0.8], [0.25, 0.3, 0.7], [0.125, 0.2, 0.6]])
        self.assertNotEqual(rows[3][1], rows[3][1], "a null bias is a gap (NaN)")
        self.assertIn("bf16, step 10, 8 draws", script)
        self.assertIn(os.path.join(self.dir, "diagnose.png"), p.stdout)

        out = os.path.join(self.dir, "elsewhere.png")
        p = run("plot", "--diagnose", path, "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.exists(out))

    def test_bad_files_are_named(self):
        good = mean_row("quartet2", "dgrad", "exact", [0.5, 0.25, 0.125, 0.0625])
        self.assertEqual(run("plot", "--diagnose", os.path.join(self.dir, "none.json")).returncode, 1)
        for name, report, message in [
                ("torn.json", json.dumps(diagnose_report([good]))[:-20], "not valid JSON"),
                ("nomean.json", {"step": 1}, 'no "mean" rows'),
                ("emptymean.json", diagnose_report([]), '"mean" is not a list of rows'),
                ("product.json", diagnose_report([dict(good, product="forward")]), "unknown product 'forward'"),
                ("reference.json", diagnose_report([dict(good, reference="bf16")]), "unknown reference 'bf16'"),
                ("short.json", diagnose_report([dict(good, bias=[0.5])]), "4 draw counts (k) but 1 bias values"),
                ("k.json", diagnose_report([good, dict(good, k=[1, 2, 3, 4])]), "row 1: its draw counts (k) differ"),
                ("type.json", diagnose_report([dict(good, layers="two")]), "mean row 0: a field is missing"),
                ("recipe.json", diagnose_report([dict(good, recipe="x\nEOD\nsystem('touch pwned')")]),
                 "mean row 0: unknown recipe 'x"),
                ("falling.json", diagnose_report([dict(good, k=[4, 2, 1, 8])]), "must rise from 1 or more"),
                ("zero.json", diagnose_report([dict(good, k=[0, 1, 2, 4])]), "must rise from 1 or more"),
                ("nostep.json", {k: v for k, v in diagnose_report([good]).items() if k != "step"},
                 "a field is missing")]:
            path = self.write(name, report)
            p = run("plot", "--diagnose", path)
            self.assertEqual(p.returncode, 1, name)
            self.assertIn(name, p.stderr)
            self.assertIn(message, p.stderr, name)
            self.assertFalse(os.path.exists(os.path.join(self.dir, "diagnose.png")), name)

    def test_runs_and_diagnose_are_one_or_the_other(self):
        path = self.write("diagnose.json", diagnose_report([mean_row("nvidia", "dgrad", "exact", [1, 1, 1, 1])]))
        write_run(os.path.join(self.dir, "a"), steps(4, 5.0, 2))
        p = run("plot", os.path.join(self.dir, "a"), "--diagnose", path)
        self.assertEqual(p.returncode, 2)
        self.assertIn("one or the other", p.stderr)


class TrainDrawsItsPlot(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-plot-train-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_train_out_draws_training_png_unless_told_not_to(self):
        out = os.path.join(self.dir, "run")
        p = run("train", *SMALL, "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(out, "training.png"), "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)
        script = read(os.path.join(out, "training.gnuplot"))
        self.assertEqual([row[0] for row in datablock(script, "train1")], [1, 2, 3, 4])
        self.assertIn(os.path.join(out, "training.png"), p.stdout)

        # A resumed run redraws the picture with all its steps, the earlier ones included.
        p = run("train", "--resume", out, "--steps", "6", "--quiet", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        script = read(os.path.join(out, "training.gnuplot"))
        self.assertEqual([row[0] for row in datablock(script, "train1")], [1, 2, 3, 4, 5, 6])

        quiet = os.path.join(self.dir, "noplot")
        p = run("train", *SMALL, "--out", quiet, "--no-plot")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.exists(os.path.join(quiet, "metrics.jsonl")))
        self.assertFalse(os.path.exists(os.path.join(quiet, "training.png")))

    def test_train_without_gnuplot_still_succeeds_with_one_note(self):
        out = os.path.join(self.dir, "run")
        env = dict(os.environ, PATH=os.path.join(self.dir, "empty-path"))
        p = run("train", *SMALL, "--out", out, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        notes = [line for line in p.stderr.splitlines() if "gnuplot is not installed" in line]
        self.assertEqual(len(notes), 1, p.stderr)
        self.assertIn("--no-plot", notes[0])
        self.assertTrue(os.path.exists(os.path.join(out, "metrics.jsonl")))
        self.assertFalse(os.path.exists(os.path.join(out, "training.png")))


if __name__ == "__main__":
    unittest.main()
