"""`quartet train`, `sample`, `prepare` and `compare`, run as a user runs them."""
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]
SMALL = ["--steps", "4", "--batch", "2", "--seq", "64", "--eval-every", "2", "--eval-batches", "1",
         "--final-eval-batches", "2", "--quiet"]


def run(*args, timeout=600):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=timeout)


class Commands(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-cli-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def expect_error(self, args, *fragments):
        p = run(*args)
        self.assertNotEqual(p.returncode, 0, f"{args} should fail")
        for f in fragments:
            self.assertIn(f, p.stderr, p.stderr)
        return p

    def test_train_writes_metrics_checkpoint_and_a_sample_and_resumes(self):
        out = self.path("run")
        p = run("train", *SMALL, "--out", out, "--sample-tokens", "20")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("final: step 4", p.stdout)
        self.assertIn("bits per byte", p.stdout)
        self.assertIn("sample:", p.stdout)
        lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
        self.assertEqual([l["step"] for l in lines], [1, 2, 3, 4])
        self.assertTrue(all("loss" in l for l in lines))
        self.assertIn("val_loss", lines[1])
        self.assertTrue(os.path.exists(os.path.join(out, "checkpoints", "step-000004", "model.safetensors")))
        # Resume to 6 steps: two more lines, same file.
        p = run("train", "--resume", out, "--steps", "6", "--quiet", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from", p.stderr)
        lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
        self.assertEqual([l["step"] for l in lines], [1, 2, 3, 4, 5, 6])
        # Settings that define the run cannot change on resume.
        self.expect_error(["train", "--resume", out, "--steps", "8", "--recipe", "bf16"], "--recipe", "resuming")
        # Sampling from the run folder (its latest checkpoint).
        p = run("sample", out, "--tokens", "10", "--prompt", "Emma", "--seed", "3")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("Emma"))
        self.assertEqual(p.stdout, run("sample", out, "--tokens", "10", "--prompt", "Emma", "--seed", "3").stdout)
        # Export as a Hugging Face folder: split projections, LlamaConfig keys, reference logits.
        hf = self.path("hf")
        p = run("export", out, "--out", hf, "--reference")
        self.assertEqual(p.returncode, 0, p.stderr)
        config = json.load(open(os.path.join(hf, "config.json")))
        self.assertEqual(config["architectures"], ["LlamaForCausalLM"])
        self.assertEqual((config["hidden_size"], config["num_key_value_heads"], config["vocab_size"]), (128, 2, 257))
        with open(os.path.join(hf, "model.safetensors"), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        self.assertEqual(header["model.layers.0.self_attn.q_proj.weight"]["shape"], [128, 128])
        self.assertEqual(header["model.layers.0.self_attn.k_proj.weight"]["shape"], [64, 128])
        self.assertEqual(header["model.layers.1.mlp.up_proj.weight"]["shape"], [512, 128])
        self.assertNotIn("model.layers.0.self_attn.qkv_proj.weight", header)
        ref = json.load(open(os.path.join(hf, "quartet_reference.json")))
        self.assertEqual(len(ref["logits"]), len(ref["tokens"]) * 257)
        self.expect_error(["export", out, "--out", hf], "already holds a model")

    def files_under(self, folder):
        found = {}
        for root, _, names in os.walk(folder):
            for n in names:
                with open(os.path.join(root, n), "rb") as f:
                    found[os.path.join(root, n)] = f.read()
        return found

    def test_an_existing_run_or_export_is_never_overwritten_silently(self):
        out = self.path("run")
        p = run("train", *SMALL, "--recipe", "bf16", "--out", out, "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        before = self.files_under(out)
        # train --out and compare --out on an existing run: refused, nothing changed.
        self.expect_error(["train", *SMALL, "--out", out], "already holds a run", "--force", "--resume")
        cmp = self.path("cmp")
        os.makedirs(os.path.join(cmp, "bf16"))
        shutil.copytree(os.path.join(out, "checkpoints"), os.path.join(cmp, "bf16", "checkpoints"))
        self.expect_error(["compare", "--recipes", "bf16", *SMALL, "--no-plot", "--out", cmp], "already holds a run")
        self.assertEqual(before, self.files_under(out))
        # --out naming a file.
        f = self.path("file.txt")
        with open(f, "w") as fh:
            fh.write("mine")
        self.expect_error(["train", *SMALL, "--out", f], "not a folder")
        self.expect_error(["compare", "--recipes", "bf16", *SMALL, "--no-plot", "--out", f], "not a folder")
        self.expect_error(["export", out, "--out", f], "not a folder")
        self.assertEqual(open(f).read(), "mine")
        # export: an earlier config.json alone is an export too; the checkpoint folder never is a target.
        hf = self.path("hf")
        os.makedirs(hf)
        with open(os.path.join(hf, "config.json"), "w") as fh:
            fh.write("{}")
        self.expect_error(["export", out, "--out", hf], "already holds a model", "config.json", "--force")
        self.assertEqual(open(os.path.join(hf, "config.json")).read(), "{}")
        ckpt = os.path.join(out, "checkpoints", "step-000004")
        self.expect_error(["export", out, "--out", ckpt, "--force"], "checkpoint folder", "even with --force")
        self.expect_error(["export", ckpt, "--out", os.path.join(out, "checkpoints", "step-000004", "."), "--force"],
                          "checkpoint folder")
        # Nor the run's own folder: the export would be mixed in with the run's files.
        self.expect_error(["export", out, "--out", out, "--force"], "is a training run's folder", "metrics.jsonl")
        self.expect_error(["export", out, "--out", os.path.join(out, "hf")], "is inside a training run's folder")
        self.assertEqual(before, self.files_under(out))
        # --force replaces the run: one run's metrics, no old checkpoints.
        p = run("train", *SMALL[:-1], "--steps", "2", "--recipe", "bf16", "--out", out, "--force", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([json.loads(l)["step"] for l in open(os.path.join(out, "metrics.jsonl"))], [1, 2])
        self.assertEqual(sorted(os.listdir(os.path.join(out, "checkpoints"))), ["latest", "step-000002"])

    def test_resume_refuses_what_cannot_change_and_applies_the_rest(self):
        out = self.path("run")
        p = run("train", *SMALL, "--recipe", "bf16", "--out", out, "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        before = self.files_under(out)
        for flag in (["--weight-decay", "0.5"], ["--grad-clip", "2"], ["--d-model", "64"], ["--layers", "3"],
                     ["--tokenizer", "gpt2"], ["--forward-only"], ["--eden-group", "128"], ["--seed", "1"],
                     ["--bf16-blocks", "first:1,last:0"]):
            self.expect_error(["train", "--resume", out, "--steps", "6", *flag], flag[0], "cannot change when resuming")
        self.assertEqual(before, self.files_under(out))
        p = run("train", "--resume", out, "--steps", "6", "--eval-every", "1", "--device", "cpu", "--quiet",
                "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--eval-every 1 (the run had 2) applies from here on", p.stderr)
        lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
        self.assertEqual([l["step"] for l in lines], [1, 2, 3, 4, 5, 6])
        self.assertIn("val_loss", lines[4])
        self.assertIn("val_loss", lines[5])

    def test_a_diverged_run_stops_with_an_error(self):
        out = self.path("run")
        p = run("train", "--steps", "40", "--batch", "2", "--seq", "64", "--lr", "1e6", "--recipe", "bf16",
                "--max-skipped-steps", "3", "--eval-every", "0", "--eval-batches", "1", "--final-eval-batches", "1",
                "--out", out, "--quiet", "--sample-tokens", "0")
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("diverged: 3 consecutive steps skipped", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "checkpoints")))
        self.expect_error(["train", "--max-skipped-steps", "-1"], "--max-skipped-steps")

    def test_a_non_finite_checkpoint_is_refused_by_every_command(self):
        out = self.path("run")
        p = run("train", *SMALL, "--recipe", "bf16", "--out", out, "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        f = os.path.join(out, "checkpoints", "step-000004", "model.safetensors")
        with open(f, "r+b") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
            fh.seek(8 + n + header["model.norm.weight"]["data_offsets"][0])
            fh.write(b"\x00\x00\xc0\x7f")  # a float32 NaN
        for args in (["sample", out, "--tokens", "5"], ["export", out, "--out", self.path("hf")],
                     ["train", "--resume", out, "--steps", "6"]):
            self.expect_error(args, "model.norm.weight", "non-finite")
        self.assertFalse(os.path.exists(self.path("hf", "model.safetensors")))

    def test_prepare_refuses_a_name_that_is_a_path(self):
        a = self.path("a.txt")
        with open(a, "w") as f:
            f.write("The quick brown fox jumps over the lazy dog. " * 50)
        out = self.path("deep", "er", "shards")
        for name in ("../../x", "/tmp/x", "a/b", "..", "."):
            self.expect_error(["prepare", a, "--out", out, "--tokenizer", "byte", "--name", name], "--name", name)
        self.assertEqual(sorted(os.listdir(self.dir)), ["a.txt"])

    def test_bad_train_input_gets_clear_errors(self):
        self.expect_error(["train", "--recipe", "fp2"], "fp2", "quartet2")
        self.expect_error(["train", "--steps", "0"], "--steps")
        self.expect_error(["train", "--data", self.path("missing")], "missing")
        self.expect_error(["train", "--device", "tpu"], "--device")
        if not os.path.exists("/dev/nvidia0"):
            # The message depends on the build: --version says which one this is.
            version = run("--version").stdout
            if "with the CUDA backend" in version:
                self.expect_error(["train", "--device", "cuda"], "--device cuda", "no CUDA driver/GPU found")
            else:
                self.assertIn("built without the CUDA backend", version)
                self.expect_error(["train", "--device", "cuda"], "no CUDA backend")
        self.expect_error(["train", "--bf16-blocks", "first2"], "first:N,last:M")
        self.expect_error(["train", "--model", "huge"], "huge", "30m")
        self.expect_error(["train", "--four-over-six", "maybe"], "on or off")
        self.expect_error(["train", "--recipe", "quartet1", "--four-over-six", "on"], "4/6")
        self.expect_error(["train", "--resume", self.path("nothing")], "not a checkpoint")
        self.expect_error(["sample", self.path("nothing")], "not a checkpoint")
        self.assertFalse(os.listdir(self.dir), "failed commands wrote nothing")

    def test_config_file_with_flag_overrides(self):
        cfg = self.path("run.toml")
        with open(cfg, "w") as f:
            f.write('recipe = "bf16"\nsteps = 3\nbatch = 2\nseq = 64\neval-batches = 1\nfinal-eval-batches = 1\n')
        p = run("train", "--config", cfg, "--steps", "2", "--quiet", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("final: step 2", p.stdout)
        self.assertIn("recipe bf16", p.stderr)

    def test_prepare_then_train_on_the_shards(self):
        a, b = self.path("a.txt"), self.path("b.txt.gz")
        with open(a, "w") as f:
            f.write("The quick brown fox jumps over the lazy dog. " * 200)
        with gzip.open(b, "wt") as f:
            f.write("It is a truth universally acknowledged. " * 200)
        out = self.path("shards")
        p = run("prepare", a, b, "--out", out, "--tokenizer", "byte")
        self.assertEqual(p.returncode, 0, p.stderr)
        names = sorted(os.listdir(out))
        self.assertIn("dataset.json", names)
        self.assertIn("shards_train_000000.bin", names)
        self.assertIn("shards_val_000000.bin", names)
        self.assertEqual(json.load(open(os.path.join(out, "dataset.json")))["documents"], 2)
        p = run("train", "--data", out, *SMALL, "--recipe", "bf16", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("byte tokenizer", p.stderr)
        # Existing shards are never replaced silently; a missing input stops before writing.
        before = {n: open(os.path.join(out, n), "rb").read() for n in names}
        self.expect_error(["prepare", a, "--out", out], "already holds a dataset", "--force")
        self.expect_error(["prepare", a, self.path("missing.txt"), "--out", out, "--force"], "missing.txt")
        self.assertEqual(before, {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))})
        bad = self.path("bad.gz")
        with open(bad, "wb") as f:
            f.write(b"\x1f\x8bnot really gzip")
        self.expect_error(["prepare", bad, "--out", self.path("x")], "gzip")

    def test_compare_prints_a_table_and_draws_the_curves(self):
        out = self.path("cmp")
        p = run("compare", "--recipes", "bf16,quartet2", *SMALL, "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("gap to bf16", p.stdout)
        report = json.load(open(os.path.join(out, "compare.json")))
        self.assertEqual([r["recipe"] for r in report["results"]], ["bf16", "quartet2"])
        self.assertEqual(report["results"][0]["gap_to_bf16"], 0)
        with open(os.path.join(out, "loss.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.expect_error(["compare", "--recipes", "bf16,,quartet2"], "empty entry")
        self.expect_error(["compare", "--recipes", "bf16,q9"], "q9")


    def test_a_run_whose_final_validation_loss_is_not_finite_fails_but_keeps_its_files(self):
        # A model whose LM head holds +-3e38 (finite, so the checkpoint is accepted) gives
        # infinite logits and a NaN loss: the run finishes, writes everything, and exits 1.
        import glob
        import struct
        base = self.path("base")
        p = run("train", "--steps", "1", "--batch", "4", "--seq", "32", "--eval-every", "0", "--final-eval-batches",
                "1", "--recipe", "bf16", "--device", "cpu", "--no-plot", "--quiet", "--out", base)
        self.assertEqual(p.returncode, 0, p.stderr)
        (checkpoint,) = glob.glob(os.path.join(base, "checkpoints", "step-*"))
        broken = self.path("broken")
        shutil.copytree(checkpoint, broken)
        with open(os.path.join(broken, "model.safetensors"), "r+b") as f:
            header_size = struct.unpack("<Q", f.read(8))[0]
            head = json.loads(f.read(header_size))["lm_head.weight"]
            self.assertEqual(head["dtype"], "F32")
            count = head["shape"][0] * head["shape"][1]
            f.seek(8 + header_size + head["data_offsets"][0])
            f.write(struct.pack(f"<{count}f", *[3e38 if i % 2 else -3e38 for i in range(count)]))
        out = self.path("diverged")
        p = run("train", "--init-from", broken, "--steps", "1", "--batch", "4", "--seq", "32", "--eval-every", "0",
                "--final-eval-batches", "1", "--recipe", "bf16", "--device", "cpu", "--no-plot", "--out", out)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("final validation loss is nan", p.stderr)
        self.assertIn("final: step 1", p.stdout)
        record = json.load(open(os.path.join(out, "run.json")))
        self.assertIsNone(record["val_loss"])
        self.assertEqual(len(glob.glob(os.path.join(out, "checkpoints", "step-*"))), 1)
        self.assertEqual(len(open(os.path.join(out, "metrics.jsonl")).readlines()), 1)

if __name__ == "__main__":
    unittest.main()
