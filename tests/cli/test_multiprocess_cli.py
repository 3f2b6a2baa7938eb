"""Data-parallel `quartet train` with several CPU processes (docs/multi-gpu.md): the ranks as the
launcher starts them (--processes N) and as an external launcher does (RANK, WORLD_SIZE, ...),
against the one-process run with the same global batch, resumed across process counts, and
failing as a job (a killed rank, a rank that never joins) without hanging."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

QUARTET = os.environ["QUARTET"]
# Two micro-batches a step: one per rank on two processes.
RUN = ["--steps", "4", "--batch", "2", "--seq", "64", "--grad-accum", "2", "--eval-every", "2",
       "--eval-batches", "1", "--final-eval-batches", "1", "--quiet", "--device", "cpu",
       "--sample-tokens", "0", "--no-plot", "--save-every", "2"]
# The ranks' sums of gradients run in another order than one process's accumulation: the
# losses and norms agree to this relative tolerance over these steps (measured: 1e-11).
TOLERANCE = 1e-6


def run(*args, env=None, timeout=300):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def environment(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read().split(b"\0")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MultiProcess(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-dp-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def train(self, out, *extra, env=None):
        p = run("train", *RUN, "--out", self.path(out), *extra, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def assert_close(self, a, b, what):
        self.assertLessEqual(abs(a - b), TOLERANCE * max(abs(a), abs(b)), f"{what}: {a} vs {b}")

    def test_one_process_through_the_data_parallel_path_is_the_plain_run_bit_for_bit(self):
        self.train("plain")
        p = self.train("one", "--processes", "1")
        self.assertIn("data parallel: 1 ranks", p.stderr)
        for a, b in zip(metrics(self.path("plain")), metrics(self.path("one"))):
            for key in ("loss", "grad_norm", "tokens", "val_loss"):
                self.assertEqual(a.get(key), b.get(key), key)
        for name in ("model.safetensors", "optimizer.safetensors"):
            with open(self.path("plain", "checkpoints", "step-000004", name), "rb") as f:
                plain = f.read()
            with open(self.path("one", "checkpoints", "step-000004", name), "rb") as f:
                self.assertEqual(f.read(), plain, name)

    def test_two_processes_follow_the_one_process_curve_and_save_one_checkpoint(self):
        self.train("plain")
        p = self.train("two", "--processes", "2")
        self.assertIn("data parallel: 2 ranks", p.stderr)
        # Rank 0 alone reports: one summary, one line per checkpoint.
        self.assertEqual(p.stdout.count("final: step 4"), 1, p.stdout)
        self.assertEqual(p.stderr.count("saved checkpoint"), 2, p.stderr)
        one, two = metrics(self.path("plain")), metrics(self.path("two"))
        self.assertEqual(len(two), 4)
        for a, b in zip(one, two):
            self.assertEqual(a["tokens"], b["tokens"])
            self.assert_close(a["loss"], b["loss"], f"step {a['step']} loss")
            self.assert_close(a["grad_norm"], b["grad_norm"], f"step {a['step']} grad_norm")
        with open(self.path("plain", "checkpoints", "step-000004", "state.json")) as f:
            state_one = json.load(f)
        with open(self.path("two", "checkpoints", "step-000004", "state.json")) as f:
            state_two = json.load(f)
        self.assertEqual(state_one["data"], state_two["data"])
        self.assertEqual(state_one["config"], state_two["config"])

    def test_gradient_buckets_change_no_bit(self):
        # Many small buckets, reduced as the backward pass completes them, against one bucket of
        # the whole buffer (the reduce-scatter of before): the same sums element by element, in
        # the same rank order, so the same run bit for bit.
        one = self.train("one_bucket", "--processes", "2", env={"QUARTET_GRAD_BUCKET_ELEMENTS": "1000000000"})
        self.assertIn("gradients reduced in 1 bucket as", one.stderr)
        many = self.train("many", "--processes", "2", env={"QUARTET_GRAD_BUCKET_ELEMENTS": "4096"})
        buckets = int(many.stderr.split("gradients reduced in ")[1].split(" ")[0])
        self.assertGreater(buckets, 3, many.stderr)
        for a, b in zip(metrics(self.path("one_bucket")), metrics(self.path("many"))):
            for key in ("loss", "grad_norm", "val_loss"):
                self.assertEqual(a.get(key), b.get(key), f"step {a['step']} {key}")
        for name in ("model.safetensors", "optimizer.safetensors"):
            with open(self.path("one_bucket", "checkpoints", "step-000004", name), "rb") as f:
                whole = f.read()
            with open(self.path("many", "checkpoints", "step-000004", name), "rb") as f:
                self.assertEqual(f.read(), whole, name)
        p = run("train", *RUN, "--processes", "2", "--out", self.path("bad"),
                env={"QUARTET_GRAD_BUCKET_ELEMENTS": "12k"})
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("QUARTET_GRAD_BUCKET_ELEMENTS='12k' must be a whole number", p.stderr)

    def test_a_checkpoint_resumes_on_another_number_of_processes(self):
        self.train("two", "--processes", "2")
        step2 = self.path("two", "checkpoints", "step-000002")
        # 2 -> 1
        p = run("train", "--resume", step2, "--out", self.path("on_one"), "--quiet", "--no-plot",
                "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        # 2 -> 2 (the same run again from its checkpoint)
        p = run("train", "--resume", step2, "--out", self.path("on_two"), "--processes", "2", "--quiet",
                "--no-plot", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        original = {m["step"]: m for m in metrics(self.path("two"))}
        again = {m["step"]: m for m in metrics(self.path("on_two"))}
        on_one = {m["step"]: m for m in metrics(self.path("on_one"))}
        self.assertEqual(sorted(on_one), [3, 4])
        for step in (3, 4):
            # Resumed on the same number of ranks: bit for bit; on another: within the tolerance.
            self.assertEqual(again[step]["loss"], original[step]["loss"])
            self.assertEqual(again[step]["grad_norm"], original[step]["grad_norm"])
            self.assert_close(on_one[step]["loss"], original[step]["loss"], f"step {step} loss")
            self.assertEqual(on_one[step]["tokens"], original[step]["tokens"])
        for folder in ("on_one", "on_two"):
            with open(self.path(folder, "checkpoints", "step-000004", "state.json")) as f:
                resumed = json.load(f)
            with open(self.path("two", "checkpoints", "step-000004", "state.json")) as f:
                self.assertEqual(resumed["data"], json.load(f)["data"], folder)

    def test_bad_process_settings_are_refused_with_a_reason(self):
        p = run("train", *RUN, "--processes", "3")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("--grad-accum 2 is not a multiple of the 3 processes", p.stderr)
        p = run("train", *RUN, "--gpus", "2")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--gpus trains on GPUs, but --device is cpu", p.stderr)
        # More GPUs than the machine has: said once, before any rank starts (no machine has 64).
        no_device = [a for i, a in enumerate(RUN) if a != "--device" and (i == 0 or RUN[i - 1] != "--device")]
        p = run("train", *no_device, "--gpus", "64")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stderr.count("--gpus 64"), 1, p.stderr)
        self.assertNotIn("rank", p.stderr)
        p = run("train", *RUN, "--processes", "2",
                env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": "1"})
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("under an external launcher leave them out", p.stderr)
        p = run("train", *RUN, env={"RANK": "3", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("RANK='3' is not valid", p.stderr)

    def test_ranks_started_by_an_external_launcher(self):
        port = str(free_port())
        ranks = []
        for r in range(2):
            env = {**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
            ranks.append(subprocess.Popen([QUARTET, "train", *RUN, "--out", self.path("ext")], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [r.communicate(timeout=300) for r in ranks]
        for r, (out, err) in zip(ranks, outs):
            self.assertEqual(r.returncode, 0, err)
        self.assertIn("final: step 4", outs[0][0])
        self.assertEqual(outs[1][0], "")  # rank 1 prints nothing
        self.assertEqual(len(metrics(self.path("ext"))), 4)

    def test_a_rank_that_never_joins_stops_the_others_with_its_number(self):
        start = time.monotonic()
        p = run("train", *RUN, env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                                    "MASTER_PORT": str(free_port()), "QUARTET_DIST_TIMEOUT": "1"})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("rank 1 of 2 did not arrive", p.stderr)
        self.assertLess(time.monotonic() - start, 60)

    def test_a_killed_rank_stops_the_job_with_a_message(self):
        launcher = subprocess.Popen([QUARTET, "train", *RUN, "--steps", "100000", "--processes", "2",
                                     "--out", self.path("killed")],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Wait until training runs (metrics appear), then kill rank 1.
            deadline = time.monotonic() + 120
            while not (os.path.exists(self.path("killed", "metrics.jsonl")) and
                       os.path.getsize(self.path("killed", "metrics.jsonl")) > 0):
                self.assertLess(time.monotonic(), deadline, "training did not start")
                self.assertIsNone(launcher.poll(), launcher.stderr.read() if launcher.poll() is not None else "")
                time.sleep(0.05)
            with open(f"/proc/{launcher.pid}/task/{launcher.pid}/children") as f:
                children = [int(c) for c in f.read().split()]
            rank1 = [c for c in children if b"RANK=1" in environment(c)]
            self.assertEqual(len(rank1), 1, children)
            os.kill(rank1[0], signal.SIGKILL)
            _, err = launcher.communicate(timeout=60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
        self.assertEqual(launcher.returncode, 128 + signal.SIGKILL, err)
        self.assertIn("rank 1 was killed by signal 9", err)
        self.assertIn("rank 1 closed its connection", err)  # what rank 0 says


if __name__ == "__main__":
    unittest.main()
