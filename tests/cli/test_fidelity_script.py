"""scripts/fidelity-30m.sh, the campaign's run driver, against a stand-in for the quartet program
that records its arguments: which runs start, which resume, which are skipped as finished, which
GPU each lane's runs get, what each call packs for the way back, and that bad names are refused
before any work; and scripts/gpu-session.sh, which runs the CUDA tests before it and gives it the
rest of its time."""
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "fidelity-30m.sh")

# A fresh run "trains" until stopped: it leaves a checkpoint and metrics, as SIGTERM at the
# budget's end would. A resumed run finishes: it writes run.json.
STAND_IN = r"""#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps(args) + "\n")
if args[0] == "eval":  # the JSON line of `quartet eval --json`
    if os.environ.get("FAIL_EVAL"):
        print("quartet eval: error: the GPU is gone", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"recipe": args[args.index("--recipe") + 1], "loss": 3.5}))
    sys.exit(0)
if args[0] == "bench":  # a result row naming the section and the attention backward chosen
    with open(args[args.index("--json") + 1], "w") as f:
        json.dump({"results": [{"case": args[args.index("--only") + 1],
                                "backward": os.environ.get("QUARTET_ATTENTION_BACKWARD")}]}, f)
    sys.exit(0)
out = args[args.index("--out") + 1]
if "CUDA_VISIBLE_DEVICES" in os.environ:
    with open(os.environ["CALLS"] + ".gpus", "a") as f:
        f.write(os.path.basename(out) + " " + os.environ["CUDA_VISIBLE_DEVICES"] + "\n")
if args[0] == "diagnose":  # the table's files in --out
    os.makedirs(out, exist_ok=True)
    for name in ("diagnose.json", "diagnose.png"):
        with open(os.path.join(out, name), "w") as f:
            f.write(name)
    sys.exit(0)
os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
steps = int(args[args.index("--steps") + 1]) if "--steps" in args else None
if steps is not None and steps <= 100:  # a short measuring run (gpu-concurrency.sh) runs to its end: a rate per step
    if os.environ.get("FAIL_SEED") == args[args.index("--seed") + 1]:
        print("quartet train: error: out of memory", file=sys.stderr)
        sys.exit(1)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for s in range(1, steps + 1):  # one step of 262,144 tokens a second
            f.write(json.dumps({"step": s, "loss": 5.0, "tokens_per_s": 1000.0 * s, "tokens": 262144 * s,
                                "time": 1000.0 + s}) + "\n")
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump({"steps": steps}, f)
    sys.exit(0)
with open(os.path.join(out, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 1, "loss": 5.0}) + "\n")
if "--resume" in args:
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump({"steps": 2861, "total_steps": 2861}, f)
    print("final: step 2861 | val loss 3.0")
    sys.exit(0)
with open(os.path.join(out, "checkpoints", "latest"), "w") as f:  # the trainer's: a file naming the folder
    f.write("step-000100\n")
print("train [100/2861] loss 4.0")
sys.exit(124)
"""


class CampaignFixture(unittest.TestCase):
    """A stand-in quartet program, a corpus folder and the runs folder, in a temporary folder."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-fidelity-")
        self.quartet = os.path.join(self.dir, "quartet")
        with open(self.quartet, "w") as f:
            f.write(STAND_IN)
        os.chmod(self.quartet, 0o755)
        corpus = os.path.join(self.dir, "corpus")
        os.makedirs(corpus)
        with open(os.path.join(corpus, "dataset.json"), "w") as f:
            f.write("{}")
        self.calls = os.path.join(self.dir, "calls.jsonl")
        # A machine of FAKE_GPUS GPUs, whatever this one has: nvidia-smi lists their indices.
        bin_dir = os.path.join(self.dir, "bin")
        os.makedirs(bin_dir)
        with open(os.path.join(bin_dir, "nvidia-smi"), "w") as f:
            f.write("#!/bin/sh\ni=0\nwhile [ $i -lt \"$FAKE_GPUS\" ]; do echo $i; i=$((i + 1)); done\n")
        os.chmod(os.path.join(bin_dir, "nvidia-smi"), 0o755)
        self.env = dict(os.environ, CALLS=self.calls, QUARTET_RUNS=os.path.join(self.dir, "runs"),
                        QUARTET_CORPUS=corpus, QUARTET_GPUS="1", FAKE_GPUS="8",
                        PATH=bin_dir + os.pathsep + os.environ["PATH"])
        self.env.pop("CUDA_VISIBLE_DEVICES", None)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def call(self, budget, *names):
        out = tempfile.mkdtemp(dir=self.dir)
        p = subprocess.run(["bash", SCRIPT, self.quartet, str(budget), *names], capture_output=True, text=True,
                           timeout=120, env=dict(self.env, OUT=out))
        return p, out

    def recorded(self, *commands):
        """The stand-in's calls in order, only those of `commands` (train, eval, diagnose) if given."""
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            calls = [json.loads(line) for line in f]
        return [c for c in calls if not commands or c[0] in commands]

    def packed(self, out):
        """The one file a call brings back: {NAME/file: content}."""
        self.assertEqual(os.listdir(out), ["fidelity-30m.tar.gz"])
        with tarfile.open(os.path.join(out, "fidelity-30m.tar.gz")) as tar:
            return {m.name.removeprefix("./"): tar.extractfile(m).read().decode()
                    for m in tar.getmembers() if m.isfile()}


class FidelityScript(CampaignFixture):
    def test_runs_start_then_resume_then_are_skipped(self):
        p, out = self.call(600, "bf16-s1", "quartet2-no46-s3")
        self.assertEqual(p.returncode, 0, p.stderr)
        first, second = self.recorded()
        self.assertEqual(first[0], "train")
        self.assertNotIn("--resume", first)
        for flag, value in [("--recipe", "bf16"), ("--seed", "1"), ("--model", "30m"), ("--steps", "2907"),
                            ("--data-order", "shuffled"), ("--lr", "0.0012"), ("--seq", "512"), ("--batch", "128"),
                            ("--grad-accum", "4")]:
            self.assertEqual(first[first.index(flag) + 1], value, flag)
        self.assertEqual(second[second.index("--recipe") + 1], "quartet2")
        self.assertEqual(second[second.index("--four-over-six") + 1], "off")
        self.assertEqual(second[second.index("--seed") + 1], "3")
        self.assertIn("bf16-s1 stopped", p.stdout)
        files = self.packed(out)
        self.assertEqual(sorted(files), ["bf16-s1/metrics.jsonl", "bf16-s1/train.log", "quartet2-no46-s3/metrics.jsonl",
                                         "quartet2-no46-s3/train.log"])
        self.assertIn("train [100/2861]", files["bf16-s1/train.log"])
        self.assertFalse(os.path.exists(self.calls + ".gpus"), "one lane leaves the GPU choice alone")

        p, out = self.call(600, "bf16-s1", "quartet2-no46-s3")
        self.assertEqual(p.returncode, 0, p.stderr)
        resumed = self.recorded("train")[2:]
        self.assertEqual([c[c.index("--resume") + 1].rsplit("/", 1)[1] for c in resumed], ["bf16-s1", "quartet2-no46-s3"])
        self.assertIn("bf16-s1 finished", p.stdout)
        files = self.packed(out)
        self.assertIn("bf16-s1/run.json", files)
        self.assertEqual(files["bf16-s1/metrics.jsonl"].count("\n"), 2, "both calls' metrics")
        # The 4-bit run's model is evaluated in BF16 once it has finished; the bf16 run's is not.
        (evaluated,) = self.recorded("eval")
        self.assertEqual(evaluated[:2], ["eval", os.path.join(self.env["QUARTET_RUNS"], "fidelity-30m-shuffled", "quartet2-no46-s3")])
        self.assertEqual(evaluated[evaluated.index("--recipe") + 1], "bf16")
        self.assertIn("--json", evaluated)
        self.assertEqual(json.loads(files["quartet2-no46-s3/eval-bf16.json"])["recipe"], "bf16")
        self.assertNotIn("bf16-s1/eval-bf16.json", files)

        p, out = self.call(600, "bf16-s1", "quartet2-no46-s3")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.recorded()), 5, "a finished run is not run, nor evaluated, again")
        self.assertIn("bf16-s1 finished earlier", p.stdout)
        self.assertEqual(sorted(n for n in self.packed(out) if n.startswith("bf16-s1/")),
                         ["bf16-s1/metrics.jsonl", "bf16-s1/run.json", "bf16-s1/train.log"])

    def test_diagnostics_are_asked_for_on_start_and_on_every_resume(self):
        self.env["QUARTET_DIAGNOSTICS"] = "250"
        self.call(600, "nvidia-s2")
        self.call(600, "nvidia-s2")
        start, resume = self.recorded("train")
        for args in (start, resume):
            self.assertEqual(args[args.index("--diagnostics") + 1], "250")
            self.assertEqual(args[args.index("--keep-last") + 1], "1")
        self.assertIn("--resume", resume)
        del self.env["QUARTET_DIAGNOSTICS"]
        self.call(600, "nvidia-s3")
        self.assertNotIn("--diagnostics", self.recorded("train")[2])

    def test_the_named_finished_runs_are_diagnosed_once(self):
        self.env["QUARTET_DIAGNOSE"] = "bf16-s9,quartet2-s1"
        self.call(600, "quartet2-s1", "nvidia-s1")
        self.assertEqual([c[0] for c in self.recorded()], ["train", "train"], "an unfinished run is not diagnosed")
        p, out = self.call(600, "quartet2-s1", "nvidia-s1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([c[0] for c in self.recorded("train", "diagnose")], ["train", "train", "train", "diagnose", "train"],
                         "quartet2-s1 diagnosed after it finished; nvidia-s1, not named, not diagnosed")
        (diagnose,) = self.recorded("diagnose")
        self.assertEqual(diagnose[:2], ["diagnose", os.path.join(self.env["QUARTET_RUNS"], "fidelity-30m-shuffled", "quartet2-s1")])
        for flag, value in [("--device", "cuda"), ("--draws", "64"), ("--batch", "16"), ("--layers", "1,4")]:
            self.assertEqual(diagnose[diagnose.index(flag) + 1], value, flag)
        self.assertIn("--no-plot", diagnose, "the GPU machine has no gnuplot")
        self.assertIn("quartet2-s1/diagnose.json", self.packed(out))
        p, out = self.call(600, "quartet2-s1")
        self.assertEqual(len(self.recorded("diagnose")), 1, "diagnosed once")
        self.assertIn("quartet2-s1 finished earlier", p.stdout)
        self.assertIn("quartet2-s1/diagnose.json", self.packed(out))

    def test_a_finished_run_named_later_for_diagnosis_is_diagnosed(self):
        self.call(600, "bf16-s1")
        self.call(600, "bf16-s1")
        self.env["QUARTET_DIAGNOSE"] = "all"
        p, _ = self.call(600, "bf16-s1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([c[0] for c in self.recorded()], ["train", "train", "diagnose"], "bf16 is not evaluated in bf16")

    def test_several_gpus_run_the_unfinished_runs_in_lanes(self):
        self.call(600, "bf16-s1")
        self.call(600, "bf16-s1")  # finished: no lane is given it
        self.env["QUARTET_GPUS"] = "2"
        p, out = self.call(600, "bf16-s1", "nvidia-s1", "tetrajet2-s1", "quartet2-s1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("3 runs in 2 lanes", p.stdout)
        with open(self.calls + ".gpus") as f:
            gpus = dict(line.split() for line in f)
        self.assertEqual(gpus, {"nvidia-s1": "0", "tetrajet2-s1": "1", "quartet2-s1": "0"})
        self.assertEqual(sorted(n.split("/")[0] for n in self.packed(out) if n.endswith("train.log")),
                         ["bf16-s1", "nvidia-s1", "quartet2-s1", "tetrajet2-s1"])
        self.env["QUARTET_GPUS"] = "8"
        p, _ = self.call(600, "nvidia-s1")
        self.assertNotIn("lanes", p.stdout, "no more lanes than runs")
        self.assertIn("nvidia-s1 finished", p.stdout)

    def gpus_of_a_call(self, *names):
        if os.path.exists(self.calls + ".gpus"):
            os.remove(self.calls + ".gpus")
        p, _ = self.call(600, *names)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(self.calls + ".gpus") as f:
            return dict(line.split() for line in f)

    def test_lanes_use_the_gpus_cuda_visible_devices_names(self):
        del self.env["QUARTET_GPUS"]
        self.env["CUDA_VISIBLE_DEVICES"] = "5,3"
        self.assertEqual(self.gpus_of_a_call("bf16-s1", "nvidia-s1", "quartet2-s1"),
                         {"bf16-s1": "5", "nvidia-s1": "3", "quartet2-s1": "5"})

    def test_several_runs_per_gpu(self):
        self.env["QUARTET_RUNS_PER_GPU"] = "2"
        self.assertEqual(self.gpus_of_a_call("bf16-s1", "nvidia-s1"), {"bf16-s1": "0", "nvidia-s1": "0"})
        self.env["QUARTET_GPUS"] = "2"
        self.assertEqual(self.gpus_of_a_call("bf16-s2", "nvidia-s2", "tetrajet2-s2", "quartet2-s2"),
                         {"bf16-s2": "0", "nvidia-s2": "1", "tetrajet2-s2": "0", "quartet2-s2": "1"})

    def test_a_failed_bf16_evaluation_is_tried_again(self):
        self.env["FAIL_EVAL"] = "1"
        self.call(600, "quartet2-s1")
        p, out = self.call(600, "quartet2-s1")
        self.assertIn("eval of quartet2-s1 in bf16 failed: quartet eval: error: the GPU is gone", p.stdout)
        self.assertNotIn("quartet2-s1/eval-bf16.json", self.packed(out))
        del self.env["FAIL_EVAL"]
        p, out = self.call(600, "quartet2-s1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.recorded("eval")), 2)
        self.assertIn("quartet2-s1/eval-bf16.json", self.packed(out))
        self.assertEqual(len(self.recorded("train")), 2, "the finished run is not trained again")

    def test_too_little_budget_starts_nothing(self):
        p, _ = self.call(30, "bf16-s2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("bf16-s2 not started", p.stdout)
        self.assertEqual(self.recorded(), [])

    def test_bad_names_are_refused_before_any_work(self):
        for names, fragment in [(["bf16-s1", "fp8-s1"], "unknown recipe 'fp8'"),
                                (["bf16-s1", "quartet2"], "must end in -s<seed>"),
                                (["bf16-sx"], "must end in -s<seed>")]:
            p, _ = self.call(600, *names)
            self.assertEqual(p.returncode, 2, names)
            self.assertIn(fragment, p.stderr, names)
        p, _ = self.call("ten", "bf16-s1")
        self.assertEqual(p.returncode, 2)
        self.assertIn("SECONDS must be a whole number", p.stderr)
        for gpus in ("0", "two"):
            self.env["QUARTET_GPUS"] = gpus
            p, _ = self.call(600, "bf16-s1")
            self.assertEqual(p.returncode, 2, gpus)
            self.assertIn("QUARTET_GPUS must be a positive whole number", p.stderr)
        self.env["QUARTET_GPUS"] = "9"
        p, _ = self.call(600, "bf16-s1")
        self.assertEqual(p.returncode, 2)
        self.assertIn("QUARTET_GPUS is 9, but this machine shows 8 GPU(s)", p.stderr)
        self.env["QUARTET_GPUS"] = "1"
        p, _ = self.call(600, "bf16-s1", "nvidia-s1", "bf16-s1")
        self.assertEqual(p.returncode, 2)
        self.assertIn("bf16-s1 is named twice", p.stderr)
        for diagnose, fragment in [("1", "QUARTET_DIAGNOSE must end in -s<seed>, got 1"),
                                   ("quartet-s1", "unknown recipe 'quartet' in quartet-s1 (QUARTET_DIAGNOSE)")]:
            self.env["QUARTET_DIAGNOSE"] = diagnose
            p, _ = self.call(600, "bf16-s1")
            self.assertEqual(p.returncode, 2, diagnose)
            self.assertIn(fragment, p.stderr)
        self.assertEqual(self.recorded(), [])



class GpuSessionScript(CampaignFixture):
    """scripts/gpu-session.sh from a bundle laid out as gpu-bundle.sh makes it (.gpu/ beside
    scripts/): it runs the CUDA tests, then gives the campaign what is left of its budget."""

    def setUp(self):
        super().setUp()
        root = os.path.join(self.dir, "checkout")
        os.makedirs(os.path.join(root, ".gpu", "lib"))
        os.makedirs(os.path.join(root, "scripts"))
        scripts = os.path.dirname(SCRIPT)
        shutil.copy(os.path.join(scripts, "fidelity-30m.sh"), os.path.join(root, "scripts"))
        shutil.copy(os.path.join(scripts, "gpu-concurrency.sh"), os.path.join(root, ".gpu"))
        shutil.copy(os.path.join(scripts, "gpu-unpack.sh"), os.path.join(root, ".gpu"))
        self.session = os.path.join(root, ".gpu", "gpu-session.sh")
        shutil.copy(os.path.join(scripts, "gpu-session.sh"), self.session)
        shutil.copy(self.quartet, os.path.join(root, ".gpu", "quartet"))
        with open(os.path.join(root, ".gpu", "cuda_tests"), "w") as f:
            f.write("#!/bin/sh\necho \"[  PASSED  ] 3 tests. binary=$QUARTET_BINARY\"\n")
        os.chmod(os.path.join(root, ".gpu", "cuda_tests"), 0o755)

    def session_call(self, *args):
        out = tempfile.mkdtemp(dir=self.dir)
        p = subprocess.run(["bash", self.session, *args], capture_output=True, text=True, timeout=120,
                           env=dict(self.env, OUT=out))
        return p, out

    def test_tests_then_the_campaign_in_the_time_left(self):
        p, out = self.session_call("tests", "600", "bf16-s1")
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(out, "cuda-tests.log")) as f:
            self.assertIn("PASSED", f.read())
        self.assertIn("cuda_tests rc=0", p.stdout)
        (run,) = self.recorded()
        self.assertEqual(run[:2], ["train", "--model"])
        self.assertEqual(run[run.index("--diagnostics") + 1], "250")
        budget = int(p.stdout.split("(budget ")[1].split(" s)")[0])
        self.assertTrue(500 < budget <= 600, budget)
        self.assertTrue(os.path.exists(os.path.join(out, "fidelity-30m.tar.gz")))

    def test_failing_cuda_tests_start_no_campaign_run(self):
        tests = os.path.join(os.path.dirname(self.session), "cuda_tests")
        with open(tests) as f:
            passing = f.read()
        with open(tests, "w") as f:
            f.write("#!/bin/sh\necho \"[  FAILED  ] 1 test, listed below\"\nexit 1\n")
        p, out = self.session_call("tests", "600", "quartet2-s1")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("cuda_tests rc=1", p.stdout)
        self.assertIn("the campaign runs (quartet2-s1) are not started", p.stdout)
        # The calls after it, which run no tests, refuse too; a test call without runs says so.
        p, out = self.session_call("none", "600", "quartet2-s1")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("are not started", p.stdout)
        p, out = self.session_call("tests", "600")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(self.recorded(), [])
        # Asked for explicitly, they start anyway.
        self.env["QUARTET_CAMPAIGN_DESPITE_FAILED_TESTS"] = "1"
        p, out = self.session_call("none", "600", "quartet2-s1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.recorded("train")), 1)
        # A passing test run clears the mark.
        del self.env["QUARTET_CAMPAIGN_DESPITE_FAILED_TESTS"]
        with open(tests, "w") as f:
            f.write(passing)
        p, out = self.session_call("tests", "600", "quartet2-s1")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(len(self.recorded("train")), 2)

    def test_concurrency_measures_one_run_then_two_at_once(self):
        p, out = self.session_call("concurrency", "600")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("concurrency rc=0", p.stdout)
        # The stand-in's steps 11..60 report 1000 x step tokens/s: the median is 35,500.
        with open(os.path.join(out, "concurrency.txt")) as f:
            report = f.read()
        # Together: steps 11..60 of each run (50 x 262,144 tokens) over the 50 s they span.
        self.assertIn("alone: 1 run(s) of quartet2 at once: 35500 = 35500 tokens/s; together 262144 tokens/s", report)
        self.assertIn("shared: 2 run(s) of quartet2 at once: 35500 + 35500 = 71000 tokens/s; together 524288 tokens/s",
                      report)
        # One run alone, two at once, and two more under MPS where this machine has it.
        under_mps = ["1", "2"] if "mps: 2 run(s)" in report else []
        seeds = sorted(c[c.index("--seed") + 1] for c in self.recorded("train"))
        self.assertEqual(seeds, sorted(["1", "1", "2"] + under_mps))
        for c in self.recorded("train"):
            for flag, value in [("--model", "30m"), ("--seq", "512"), ("--batch", "128"), ("--grad-accum", "4"),
                                ("--recipe", "quartet2"), ("--steps", "60")]:
                self.assertEqual(c[c.index(flag) + 1], value, flag)

    def test_a_failed_concurrency_run_is_said(self):
        self.env["FAIL_SEED"] = "2"
        p, out = self.session_call("concurrency", "600")
        self.assertIn("concurrency rc=1", p.stdout)
        with open(os.path.join(out, "concurrency.txt")) as f:
            self.assertIn("shared: run 2 failed: quartet train: error: out of memory", f.read())

    def test_attention_backwards_alternate_and_many_outputs_come_back_as_one_archive(self):
        p, out = self.session_call("attnbwd", "600")
        self.assertEqual(p.returncode, 0, p.stderr)
        benches = self.recorded("bench")
        self.assertEqual([b[b.index("--only") + 1] for b in benches], ["ops"] * 4 + ["train"] * 2)
        # Seven outputs: packed into one archive, nothing left beside it.
        self.assertEqual(os.listdir(out), ["session.tar.gz"])
        self.assertIn("7 outputs packed into session.tar.gz", p.stdout)
        with tarfile.open(os.path.join(out, "session.tar.gz")) as tar:
            files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
        self.assertIn("attention-bwd.log", files)
        for name, backward in [("attention-split-1.json", "split"), ("attention-wgmma-1.json", "wgmma"),
                               ("attention-split-2.json", "split"), ("attention-wgmma-2.json", "wgmma"),
                               ("attention-train-split.json", "split"), ("attention-train-wgmma.json", "wgmma")]:
            self.assertEqual(json.loads(files[name])["results"][0]["backward"], backward, name)

    def test_bad_arguments_are_refused_before_any_work(self):
        for args, fragment in [((), "usage"), (("tests",), "usage"), (("tests", "ten"), "whole number")]:
            p, _ = self.session_call(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(fragment, p.stderr, args)
        self.assertEqual(self.recorded(), [])

if __name__ == "__main__":
    unittest.main()
