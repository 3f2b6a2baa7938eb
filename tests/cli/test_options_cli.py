"""Options, config files, exit codes and errors of the command line (issue 14, area "cli").

Each test runs the real program as a user would and checks the exit code and that the message
names what was wrong; none of the expected values comes from the program itself.
"""
import json
import os
import re
import unittest

from cli_case import USAGE, CliCase, run

# A run small enough for a unit test (128 tokens: the smallest the quartet2 recipe's 128-wide
# rotations take); BASE leaves the evaluation sizes to the test.
BASE = ["--steps", "1", "--batch", "2", "--seq", "64", "--quiet", "--sample-tokens", "0", "--device", "cpu"]
TINY = BASE + ["--eval-batches", "1", "--final-eval-batches", "1"]

RUNTIME = 1  # the work failed (USAGE = 2: the command line or config file is wrong)

# Every run here takes seconds (cli_case.TIMEOUT, 180 s by default); a regression that starts a
# default 600-step run instead of refusing its input fails at the timeout rather than holding
# the suite for minutes.


class Case(CliCase):
    prefix = "quartet-options-"

    def config(self, text, name="run.toml"):
        path = self.path(name)
        with open(path, "w") as f:
            f.write(text)
        return path


class NumericFlags(Case):
    def test_sizes_that_overflow_are_refused_not_crashed_on(self):
        # Each was a SIGFPE (2^32 x 2^32 wraps to 0 tokens) or a silently clamped value.
        self.expect(USAGE, ["train", "--batch", "4294967296", "--seq", "4294967296"], "--batch", "4294967296")
        self.expect(USAGE, ["train", "--batch", "2147483647", "--seq", "2147483647"], "--batch", "--seq",
                    "tokens per micro-batch")
        self.expect(USAGE, ["train", "--steps", "9223372036854775807", "--grad-accum", "4"], "--steps", "--grad-accum")
        self.expect(USAGE, ["train", "--steps", "99999999999999999999"], "--steps", "99999999999999999999")
        self.expect(USAGE, ["train", "--bf16-blocks", "first:99999999999999999999,last:1"], "--bf16-blocks",
                    "99999999999999999999")
        self.assertFalse(os.listdir(self.dir))

    def test_zero_and_negative_values_are_refused(self):
        for flag, value in [("--layers", "0"), ("--d-model", "0"), ("--ffn", "0"), ("--heads", "-2"),
                            ("--kv-heads", "0"), ("--ffn", "-5"), ("--seed", "-1"), ("--sample-tokens", "-5"),
                            ("--batch", "0"), ("--grad-accum", "-1"), ("--eval-every", "-1"), ("--save-every", "-3"),
                            ("--eval-batches", "0"), ("--final-eval-batches", "0"), ("--backward-rotation", "0"),
                            ("--eden-group", "64"), ("--forward-clip", "0"), ("--backward-headroom", "-1"),
                            ("--backward-clip", "0"), ("--grad-clip", "0"), ("--weight-decay", "-0.1")]:
            with self.subTest(flag=flag, value=value):
                self.expect(USAGE, ["train", f"{flag}={value}"], flag, value)

    def test_other_commands_refuse_wrapped_or_clamped_integers(self):
        # Each ran with a wrapped or clamped value and recorded it (a seed of 2^64 - 1 for -1).
        for args, flag, value in [
                (["quant-error", "--rows", "4", "--seed", "-1"], "--seed", "-1"),
                (["quant-error", "--rows", "99999999999999999999"], "--rows", "99999999999999999999"),
                (["quant-error", "--rows", "4", "--draws", "0"], "--draws", "0"),
                (["prepare", "in.txt", "--out", self.path("p"), "--shuffle", "-1"], "--shuffle", "-1"),
                (["prepare", "in.txt", "--out", self.path("p"), "--threads", "-1"], "--threads", "-1"),
                (["train", "--max-skipped-steps", "99999999999999999999"], "--max-skipped-steps",
                 "99999999999999999999"),
                (["train", "--max-skipped-steps", "-5"], "--max-skipped-steps", "-5")]:
            with self.subTest(args=args):
                self.expect(USAGE, args, flag, value)
        self.assertFalse(os.path.exists(self.path("p")))

    def test_optimizer_values_beyond_fp32_are_refused(self):
        # Finite as doubles, 0 or infinite in the FP32 optimizer: the run used to finish with NaN
        # weights and exit 0.
        for flag, value, shown in [("--eps", "1e-50", "1e-50"), ("--lr", "1e39", "1e+39"),
                                   ("--weight-decay", "1e300", "1e+300")]:
            with self.subTest(flag=flag, value=value):
                self.expect(USAGE, ["train", *TINY, flag, value], flag, shown, "FP32")

    def test_numbers_must_be_finite_and_whole(self):
        for flag, value in [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1e-3"), ("--lr", "1e999"),
                            ("--steps", "2.5"), ("--steps", "ten"), ("--seed", "1e3"), ("--batch", "0x10")]:
            with self.subTest(flag=flag, value=value):
                self.expect(USAGE, ["train", flag, value], flag, value)

    def test_sample_flags(self):
        missing = self.path("nothing")
        for flag, value in [("--tokens", "-1"), ("--tokens", "0"), ("--seed", "-1"), ("--temperature", "-1"),
                            ("--top-k", "-1"), ("--count", "0")]:
            with self.subTest(flag=flag, value=value):
                self.expect(USAGE, ["sample", missing, f"{flag}={value}"], flag, value)

    def test_compare_refuses_a_recipe_listed_twice(self):
        self.expect(USAGE, ["compare", "--recipes", "bf16,bf16", "--no-plot", "--out", self.path("c")], "bf16 twice")
        self.expect(USAGE, ["compare", "--recipes", "bf16,quartet2,", "--no-plot", "--out", self.path("c")],
                    "empty entry")
        self.assertFalse(os.listdir(self.dir))

    def test_valid_values_at_the_bounds_still_parse(self):
        # Parsing succeeds (exit 1, not 2): the run then fails on the missing data folder.
        self.expect(RUNTIME, ["train", "--seed", "18446744073709551615", "--eval-every", "0", "--weight-decay", "0",
                              "--data", self.path("missing")], "missing")


class ExitCodesAndUnknownFlags(Case):
    def test_usage_errors_exit_2_and_list_unknown_flags_in_order(self):
        p = self.expect(USAGE, ["train", "--zeta", "--alpha", "--mid"], "--zeta --alpha --mid")
        self.assertIn("unknown arguments", p.stderr)
        self.expect(USAGE, ["train", "--steps"], "--steps")          # CLI11: needs a value (was 106 or so)
        self.expect(USAGE, ["train", "--steps", "abc"], "--steps")   # CLI11: conversion (was 105)
        self.expect(USAGE, ["sample"], "checkpoint")                 # CLI11: required positional (was 106)
        self.expect(USAGE, ["bogus"], "unknown command 'bogus'")
        self.expect(USAGE, [], "subcommand")
        self.expect(USAGE, ["--bogus"], "unknown argument --bogus")
        self.expect(USAGE, ["sample", self.path("run"), "extra"], "unknown argument extra")
        self.expect(USAGE, ["train", "--recipe", "fp2"], "fp2")      # a usage error found after parsing

    def test_names_and_shapes_that_cannot_work_are_usage_errors(self):
        # These used to be found only once the run started (exit 1).
        self.expect(USAGE, ["train", "--model", "huge"], "--model", "huge", "124m")
        self.expect(USAGE, ["train", "--tokenizer", "foo"], "--tokenizer", "foo", "gpt2")
        self.expect(USAGE, ["train", "--heads", "3"], "n_heads 3")
        self.expect(USAGE, ["train", "--recipe", "quartet2", "--batch", "2", "--seq", "32"], "RHT-128", "= 64")
        out = self.path("prepared")
        text = self.path("doc.txt")
        with open(text, "w") as f:
            f.write("some text to tokenize\n" * 20)
        for args, fragments in [(["--val-fraction", "2"], ["--val-fraction", "2"]),
                                (["--val-fraction", "0"], ["--val-fraction"]),
                                (["--shard-tokens", "0"], ["--shard-tokens", "0"]),
                                (["--name", "a/b"], ["--name", "a/b"]),
                                (["--tokenizer", "foo"], ["--tokenizer", "foo"])]:
            with self.subTest(args=args):
                self.expect(USAGE, ["prepare", text, "--out", out, *args], *fragments)
                self.assertFalse(os.path.exists(out))  # nothing was written

    def test_help_and_version_exit_0(self):
        self.assertEqual(run("--help").returncode, 0)
        self.assertEqual(run("train", "--help").returncode, 0)
        p = run("--version")
        self.assertEqual(p.returncode, 0)
        self.assertTrue(re.match(r"quartet \d+\.\d+\.\d+ \((with the CUDA backend|CPU only: built without the CUDA "
                                 r"backend)\)", p.stdout), p.stdout)

    def test_an_unreadable_config_is_a_usage_error_with_the_reason(self):
        self.expect(USAGE, ["train", "--config", self.path("none.toml")], self.path("none.toml"),
                    "No such file or directory")

    def test_runtime_errors_exit_1(self):
        self.expect(RUNTIME, ["train", "--data", self.path("missing")], "missing")
        self.expect(RUNTIME, ["sample", self.path("nothing")], "not a checkpoint")

    def test_an_unwritable_out_names_the_path_and_the_reason(self):
        blocker = self.path("a-file")
        with open(blocker, "w") as f:
            f.write("not a folder")
        out = os.path.join(blocker, "run")
        p = self.expect(RUNTIME, ["train", *TINY, "--out", out], out, "Not a directory")
        self.assertNotIn("filesystem error", p.stderr)
        with open(blocker) as f:
            self.assertEqual(f.read(), "not a folder")


class ConfigFiles(Case):
    def test_unknown_keys_and_sections_are_refused_with_a_suggestion(self):
        cfg = self.config("stpes = 3\n")
        self.expect(USAGE, ["train", "--config", cfg], cfg, "'stpes'", "did you mean 'steps'")
        cfg = self.config("[trian]\nsteps = 3\n")
        self.expect(USAGE, ["train", "--config", cfg], cfg, "[trian]", "did you mean 'train'")
        cfg = self.config("[train.model]\nsteps = 3\n")
        self.expect(USAGE, ["train", "--config", cfg], cfg, "[train.model]")
        cfg = self.config("config = \"other.toml\"\n")
        self.expect(USAGE, ["train", "--config", cfg], cfg, "'config'")

    def test_names_out_of_their_list_name_the_file_and_the_key(self):
        for key, value in [("model", "huge"), ("tokenizer", "foo"), ("data-order", "random")]:
            with self.subTest(key=key):
                cfg = self.config(f'{key} = "{value}"\n')
                self.expect(USAGE, ["train", "--config", cfg], cfg, f"key '{key}'", value, "must be one of")

    def test_type_errors_name_the_file_and_the_key(self):
        for text, key in [('steps = "many"\n', "steps"), ("batch = 2.5\n", "batch"), ("lr = \"fast\"\n", "lr"),
                          ("forward-only = 3\n", "forward-only"), ("seed = -1\n", "seed"),
                          ("[train]\nlayers = 0\n", "[train] layers"), ("recipe = [\"bf16\", \"nvidia\"]\n", "recipe")]:
            with self.subTest(text=text):
                cfg = self.config(text)
                self.expect(USAGE, ["train", "--config", cfg], cfg, f"'{key}'")

    def test_both_spellings_of_a_key_are_accepted_but_not_twice(self):
        # final_eval_batches is state.json's spelling, final-eval-batches the flag's.
        for key in ["final_eval_batches", "final-eval-batches"]:
            with self.subTest(key=key):
                cfg = self.config(f"{key} = 3\neval_batches = 2\n")
                p = run("train", "--config", cfg, *BASE)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("first 3 validation batches", p.stderr)
                self.assertIn("cover the first 2", p.stderr)
        cfg = self.config("final_eval_batches = 3\nfinal-eval-batches = 4\n")
        self.expect(USAGE, ["train", "--config", cfg], cfg, "given twice")

    def test_a_second_config_is_refused(self):
        a, b = self.config("steps = 2\n", "a.toml"), self.config("steps = 3\n", "b.toml")
        self.expect(USAGE, ["train", "--config", a, f"--config={b}"], a, b, "twice")

    def test_sections_of_other_commands_are_skipped(self):
        cfg = self.config("[compare]\nrecipes = \"bf16,nvidia\"\n[train]\nrecipe = \"bf16\"\n")
        p = run("train", "--config", cfg, *TINY)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("recipe bf16", p.stderr)


class CheckpointState(Case):
    def trained_run(self):
        out = self.path("run")
        p = run("train", *TINY, "--steps", "2", "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        state = os.path.join(out, "checkpoints", "step-000002", "state.json")
        with open(state) as f:
            return out, state, json.load(f)

    def test_resume_refuses_options_it_would_ignore(self):
        out, _, _ = self.trained_run()
        for flag, value in [("--layers", "3"), ("--weight-decay", "0.5"), ("--seed", "7"), ("--lr", "0.1"),
                            ("--data-order", "shuffled")]:
            with self.subTest(flag=flag):
                self.expect(USAGE, ["train", "--resume", out, "--steps", "3", flag, value], flag, "resuming")

    def test_a_missing_or_mistyped_field_is_named_with_the_file(self):
        out, state_path, state = self.trained_run()
        cases = [(("config", "steps"), None, "config.steps", "missing"),
                 (("step",), None, "'step'", "missing"),
                 (("data", "position"), None, "data.position", "missing"),
                 (("config", "seq"), "sixteen", "config.seq", "whole number"),
                 (("config", "model_overrides", "n_layers"), -1, "config.model_overrides.n_layers", "at least 0"),
                 (("config", "seed"), -1, "config.seed", "whole number")]
        for path, value, field, why in cases:
            with self.subTest(field=field):
                broken = json.loads(json.dumps(state))
                node = broken
                for key in path[:-1]:
                    node = node[key]
                if value is None:
                    del node[path[-1]]
                else:
                    node[path[-1]] = value
                with open(state_path, "w") as f:
                    json.dump(broken, f)
                for args in (["train", "--resume", out, "--steps", "3", "--quiet"], ["sample", out, "--tokens", "2"]):
                    p = self.expect(RUNTIME, args, state_path, field, why)
                    self.assertNotIn("json.exception", p.stderr)


class ProgressTimes(Case):
    def test_the_final_line_quotes_the_progress_lines_elapsed_time(self):
        # The GPT-2 tokenizer makes loading the embedded corpus take seconds: the final line
        # used a clock started after loading, the progress line one started before it.
        p = run("train", "--tokenizer", "gpt2", "--steps", "2", "--batch", "2", "--seq", "64", "--eval-every", "0",
                "--eval-batches", "1", "--final-eval-batches", "1", "--sample-tokens", "0", "--device", "cpu")
        self.assertEqual(p.returncode, 0, p.stderr)
        progress = re.findall(r"\[2/2\].*elapsed (\S+)  eta", p.stderr)
        final = re.search(r"^final: .* \| (\S+)$", p.stdout, re.M)
        self.assertTrue(progress and final, p.stderr + p.stdout)
        self.assertEqual(progress[-1], final.group(1))


class ThreadCountDeterminism(Case):
    def test_one_and_two_threads_give_the_same_losses_and_weights(self):
        # Large enough for every parallel path (OpenMP loops and the BLAS blocks); grad-accum and
        # a periodic evaluation included. Before the fix the first step's loss already differed.
        args = ["train", "--recipe", "quartet2", "--steps", "3", "--batch", "4", "--seq", "128", "--grad-accum", "2",
                "--eval-every", "2", "--eval-batches", "1", "--final-eval-batches", "2", "--quiet",
                "--sample-tokens", "0", "--device", "cpu"]
        runs = {}
        for threads in ("1", "2"):
            out = self.path(f"threads-{threads}")
            env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
            p = run(*args, "--out", out, env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(out, "metrics.jsonl")) as f:
                metrics = [json.loads(line) for line in f]
            numbers = [(m["loss"], m["grad_norm"], m.get("val_loss"), m.get("val_bpb")) for m in metrics]
            checkpoint = os.path.join(out, "checkpoints", "step-000003")
            with open(os.path.join(checkpoint, "model.safetensors"), "rb") as f:
                weights = f.read()
            with open(os.path.join(checkpoint, "optimizer.safetensors"), "rb") as f:
                moments = f.read()
            runs[threads] = (numbers, weights, moments)
        self.assertEqual(len(runs["1"][0]), 3)
        self.assertEqual(runs["1"][0], runs["2"][0], "losses differ between 1 and 2 threads")
        self.assertTrue(runs["1"][1] == runs["2"][1], "weights differ between 1 and 2 threads")
        self.assertTrue(runs["1"][2] == runs["2"][2], "optimizer moments differ between 1 and 2 threads")


if __name__ == "__main__":
    unittest.main()
