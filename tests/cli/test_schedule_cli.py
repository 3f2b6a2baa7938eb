"""`quartet train` schedule, AdamW and checkpoint-retention options (docs/run-options.md).

Each test runs the real program and checks exit codes, messages that name the flag, and what
the run wrote; expected learning rates are worked out by hand in the comments.
"""
import json
import os
import unittest

from cli_case import CliCase

SMALL = ["--batch", "2", "--seq", "64", "--eval-batches", "1", "--final-eval-batches", "1", "--quiet",
         "--sample-tokens", "0", "--device", "cpu", "--recipe", "bf16"]

# What --resume must refuse: each changes what is trained.
FIXED = [["--schedule", "linear"], ["--warmup-steps", "1"], ["--warmup-fraction", "0.2"], ["--min-lr", "1e-5"],
         ["--decay-fraction", "0.5"], ["--beta1", "0.8"], ["--beta2", "0.99"], ["--eps", "1e-6"]]


class Case(CliCase):
    prefix = "quartet-schedule-"

    def state(self, out, step):
        with open(os.path.join(out, "checkpoints", f"step-{step:06d}", "state.json")) as f:
            return json.load(f)

    def lrs(self, out):
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(line)["lr"] for line in f]

    def checkpoints(self, out):
        return sorted(os.listdir(os.path.join(out, "checkpoints")))


class ScheduleOptions(Case):
    def test_bad_values_are_refused_naming_the_flag(self):
        for args, flag in [(["--schedule", "cosin"], "--schedule"), (["--beta1", "1"], "--beta1"),
                           (["--beta2", "-0.1"], "--beta2"), (["--eps", "0"], "--eps"), (["--eps", "nan"], "--eps"),
                           (["--min-lr", "-1e-4"], "--min-lr"), (["--warmup-fraction", "1"], "--warmup-fraction"),
                           (["--warmup-steps", "-1"], "--warmup-steps"), (["--decay-fraction", "0"], "--decay-fraction"),
                           (["--decay-fraction", "1.5"], "--decay-fraction"),
                           # across options
                           (["--lr", "1e-3", "--min-lr", "2e-3"], "--min-lr"),
                           (["--steps", "10", "--warmup-steps", "10"], "--warmup-steps"),
                           (["--schedule", "cosine", "--decay-fraction", "0.3"], "--decay-fraction"),
                           (["--schedule", "constant", "--min-lr", "1e-5"], "--min-lr"),
                           (["--schedule", "wsd", "--steps", "10", "--warmup-steps", "5", "--decay-fraction", "0.6"],
                            "--decay-fraction"),
                           (["--warmup-steps", "2", "--warmup-fraction", "0.2"], "--warmup-steps")]:
            with self.subTest(args=args):
                self.refused(["train", *args], flag)
        self.assertFalse(os.listdir(self.dir))

    def test_a_linear_run_follows_its_schedule_and_records_it(self):
        out = self.path("run")
        self.ok("train", *SMALL, "--steps", "3", "--schedule", "linear", "--warmup-steps", "0", "--min-lr", "0",
                "--lr", "2e-3", "--beta1", "0.8", "--beta2", "0.99", "--eps", "1e-6", "--out", out)
        # lr 2e-3 at the first step, half way at the second, min-lr 0 at the last.
        lrs = self.lrs(out)
        self.assertAlmostEqual(lrs[0], 2e-3, delta=1e-12)
        self.assertAlmostEqual(lrs[1], 1e-3, delta=1e-12)
        self.assertEqual(lrs[2], 0.0)
        config = self.state(out, 3)["config"]
        self.assertEqual(config["schedule"], "linear")
        self.assertEqual(config["warmup_steps"], 0)
        self.assertEqual(config["min_lr"], 0.0)
        self.assertEqual((config["beta1"], config["beta2"], config["eps"]), (0.8, 0.99, 1e-6))
        self.assertNotIn("decay_fraction", config)

    def test_the_default_is_the_cosine_schedule_with_its_adamw_settings(self):
        out = self.path("run")
        self.ok("train", *SMALL, "--steps", "3", "--lr", "1e-3", "--out", out)
        config = self.state(out, 3)["config"]
        self.assertEqual(config["schedule"], "cosine")
        self.assertEqual((config["beta1"], config["beta2"], config["eps"]), (0.9, 0.95, 1e-8))
        # warmup round(0.1 x 3) = 0; cosine from lr at step 0 to lr/10 at step 2, lr x 0.55 between.
        lrs = self.lrs(out)
        self.assertAlmostEqual(lrs[0], 1e-3, delta=1e-15)
        self.assertAlmostEqual(lrs[1], 0.55e-3, delta=1e-15)
        self.assertAlmostEqual(lrs[2], 1e-4, delta=1e-15)

    def test_a_config_file_sets_them(self):
        out = self.path("run")
        toml = self.path("run.toml")
        with open(toml, "w") as f:
            f.write('schedule = "wsd"\ndecay_fraction = 0.5\nwarmup-steps = 1\nbeta2 = 0.98\nmin_lr = 1e-4\n')
        self.ok("train", *SMALL, "--steps", "4", "--lr", "1e-3", "--config", toml, "--out", out)
        config = self.state(out, 4)["config"]
        self.assertEqual((config["schedule"], config["decay_fraction"], config["warmup_steps"]), ("wsd", 0.5, 1))
        self.assertEqual((config["beta2"], config["min_lr"]), (0.98, 1e-4))
        # warmup step 0 at lr/100; step 1 stable; the last 2 steps fall to 5.5e-4 then 1e-4.
        lrs = self.lrs(out)
        self.assertAlmostEqual(lrs[0], 1e-5, delta=1e-15)
        self.assertAlmostEqual(lrs[1], 1e-3, delta=1e-15)
        self.assertAlmostEqual(lrs[2], 5.5e-4, delta=1e-15)
        self.assertAlmostEqual(lrs[3], 1e-4, delta=1e-15)
        with open(toml, "w") as f:
            f.write("beta1 = 1.0\n")
        self.refused(["train", "--config", toml], "beta1", "[0, 1)")

    def test_resume_refuses_them_and_old_checkpoints_still_resume(self):
        out = self.path("run")
        self.ok("train", *SMALL, "--steps", "2", "--out", out)
        for flag in FIXED:
            with self.subTest(flag=flag):
                self.refused(["train", "--resume", out, "--steps", "4", *flag], flag[0], "cannot change when resuming")
        # A checkpoint written before these options existed has none of their keys.
        path = os.path.join(out, "checkpoints", "step-000002", "state.json")
        with open(path) as f:
            state = json.load(f)
        for key in ("schedule", "beta1", "beta2", "eps"):
            del state["config"][key]
        with open(path, "w") as f:
            json.dump(state, f)
        self.ok("train", "--resume", out, "--steps", "3", "--quiet", "--sample-tokens", "0")
        config = self.state(out, 3)["config"]
        self.assertEqual((config["schedule"], config["beta1"], config["beta2"], config["eps"]),
                         ("cosine", 0.9, 0.95, 1e-8))


class CheckpointRetention(Case):
    def test_keep_last_leaves_the_most_recent(self):
        out = self.path("run")
        self.ok("train", *SMALL, "--steps", "4", "--save-every", "1", "--keep-last", "2", "--out", out)
        self.assertEqual(self.checkpoints(out), ["latest", "step-000003", "step-000004"])
        # It may change on resume (a run control, not saved): keep one from here on.
        self.ok("train", "--resume", out, "--steps", "6", "--keep-last", "1", "--quiet", "--sample-tokens", "0")
        self.assertEqual(self.checkpoints(out), ["latest", "step-000006"])

    def test_save_every_minutes_saves_and_may_change_on_resume(self):
        out = self.path("run")
        # 1e-9 minutes have always passed after a step: every step saves.
        self.ok("train", *SMALL, "--steps", "2", "--save-every-minutes", "1e-9", "--out", out)
        self.assertEqual(self.checkpoints(out), ["latest", "step-000001", "step-000002"])
        self.ok("train", "--resume", out, "--steps", "4", "--save-every-minutes", "60", "--quiet", "--sample-tokens", "0")
        self.assertEqual(self.checkpoints(out), ["latest", "step-000001", "step-000002", "step-000004"])

    def test_bad_values_are_refused_naming_the_flag(self):
        for args in (["--keep-last", "-1"], ["--keep-last", "1.5"], ["--save-every-minutes", "-1"],
                     ["--save-every-minutes", "inf"]):
            with self.subTest(args=args):
                self.refused(["train", *args], args[0])
        # Nothing is saved without --out: refused rather than ignored.
        for flag in ("--keep-last", "--save-every-minutes"):
            with self.subTest(flag=flag):
                self.refused(["train", flag, "1"], flag, "needs --out")


if __name__ == "__main__":
    unittest.main()
