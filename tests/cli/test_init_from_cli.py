"""`quartet train --init-from` and `quartet compare --init-from` (docs/run-options.md) as a user
runs them: what the run records, which combinations are refused, and that the source checkpoint
is never lost. The numerics (the started run's weights are the source's) are checked in
tests/train/initial_weights_test.cpp and cli.eval."""
import json
import os
import shutil
import tempfile
import unittest

from cli_case import CliCase, run

SMALL = ["--steps", "2", "--batch", "2", "--seq", "64", "--eval-every", "0", "--eval-batches", "1",
         "--final-eval-batches", "1", "--quiet", "--sample-tokens", "0", "--device", "cpu", "--no-plot"]
COMPARE = SMALL[:SMALL.index("--sample-tokens")] + SMALL[SMALL.index("--sample-tokens") + 2:]


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


class InitFrom(CliCase):
    prefix = "quartet-init-from-"

    @classmethod
    def setUpClass(cls):
        cls.sources = tempfile.mkdtemp(prefix="quartet-init-sources-")
        for name, seed in (("a", "1"), ("b", "2")):
            p = run("train", *SMALL, "--recipe", "bf16", "--seed", seed, "--out", os.path.join(cls.sources, name))
            assert p.returncode == 0, p.stderr
        cls.a_checkpoint = os.path.realpath(os.path.join(cls.sources, "a", "checkpoints", "step-000002"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.sources)

    def source(self, name):
        return os.path.join(self.sources, name)

    def test_the_run_records_the_checkpoint_it_read(self):
        out = self.path("run")
        # Given as a relative path through a run folder: recorded as the checkpoint's absolute path.
        relative = os.path.relpath(self.source("a"))
        p = self.ok("train", *SMALL, "--init-from", relative, "--out", out, "--json")
        summary = json.loads(p.stdout)
        self.assertEqual(summary["init_from"], self.a_checkpoint)
        self.assertEqual(read_json(out, "run.json")["config"]["init_from"], self.a_checkpoint)
        self.assertIn(f"initialised from {self.a_checkpoint}: the weights of step 2 of a bf16 run", p.stderr)
        p = self.ok("train", *SMALL, "--json")
        self.assertIsNone(json.loads(p.stdout)["init_from"])

    def test_a_config_file_may_name_it(self):
        config = self.path("run.toml")
        with open(config, "w") as f:
            f.write(f'init-from = "{self.source("a")}"\nrecipe = "bf16"\n')
        p = self.ok("train", *SMALL, "--config", config, "--json")
        self.assertEqual(json.loads(p.stdout)["init_from"], self.a_checkpoint)

    def test_resume_refuses_it(self):
        out = self.path("run")
        self.ok("train", *SMALL, "--out", out)
        self.refused(["train", "--resume", out, "--init-from", self.source("a"), "--steps", "3"],
                     "--init-from cannot change when resuming")

    def test_a_source_inside_the_runs_own_folder_is_refused_and_kept(self):
        target = self.path("target")
        shutil.copytree(self.source("a"), target)
        for args in (["train", *SMALL, "--init-from", target, "--out", target, "--force"],
                     ["train", *SMALL, "--init-from", os.path.join(target, "checkpoints", "step-000002"),
                      "--out", self.dir, "--force"]):
            self.expect(1, args, "the checkpoint lies inside --out", "give the run another --out")
        self.assertTrue(os.path.isfile(os.path.join(target, "checkpoints", "step-000002", "model.safetensors")))
        self.expect(1, ["compare", *COMPARE, "--recipes", "bf16,quartet2", "--init-from", target, "--out", self.dir,
                        "--force"], "the checkpoint lies inside --out")

    def test_data_parallel_ranks_start_from_the_same_weights(self):
        # Two ranks of one micro-batch each, at a learning rate too small to move a weight: the
        # final evaluation (windows shared between the ranks, summed exactly) is the source's.
        out = self.path("two-ranks")
        p = self.ok("train", *SMALL, "--recipe", "bf16", "--processes", "2", "--grad-accum", "2", "--lr", "1e-30",
                    "--steps", "1", "--init-from", self.source("a"), "--out", out)
        self.assertIn("data parallel: 2 ranks", p.stderr)
        self.assertEqual(p.stderr.count("initialised from"), 1, "rank 0 alone reports")
        self.assertEqual(read_json(out, "run.json")["val_loss"], read_json(self.source("a"), "run.json")["val_loss"])
        self.assertEqual(read_json(out, "run.json")["config"]["init_from"], self.a_checkpoint)

    def test_compare_starts_every_recipe_from_one_checkpoint(self):
        out = self.path("cmp")
        self.ok("compare", *COMPARE, "--recipes", "bf16,quartet2",
                "--init-from", self.source("a"), "--out", out)
        self.assertEqual(read_json(out, "compare.json")["config"]["init_from"], self.a_checkpoint)
        for recipe in ("bf16", "quartet2"):
            state = read_json(out, recipe, "checkpoints", "step-000002", "state.json")
            self.assertEqual(state["config"]["init_from"], self.a_checkpoint, recipe)

    def test_compare_from_refuses_runs_started_from_different_checkpoints(self):
        for name, source in (("from-a", "a"), ("from-b", "b")):
            self.ok("train", *SMALL, "--recipe", "quartet2" if source == "a" else "bf16",
                    "--init-from", self.source(source), "--out", self.path(name))
        self.expect(1, ["compare", "--from", self.path("from-a"), self.path("from-b"), "--out", self.path("cmp")],
                    "were not trained alike: init_from is")


if __name__ == "__main__":
    unittest.main()
