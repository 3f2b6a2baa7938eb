"""`quartet train` interrupted: by SIGINT/SIGTERM (a checkpoint of the step under way is saved)
and by kill -9 at random moments (the run folder stays consistent and resumes)."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

QUARTET = os.environ["QUARTET"]
TINY = ["--batch", "2", "--seq", "64", "--recipe", "bf16", "--eval-every", "0", "--eval-batches", "1",
        "--final-eval-batches", "1", "--quiet", "--sample-tokens", "0"]


def start(*args):
    return subprocess.Popen([QUARTET, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def metric_steps(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    steps = []
    with open(path) as f:
        for line in f:
            try:
                steps.append(json.loads(line)["step"])
            except ValueError:
                break  # a line torn by kill -9
    return steps


def safetensors_complete(path):
    """The header parses and the file is exactly as long as its tensors say."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    end = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
    return len(data) == 8 + n + end


class Interrupted(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-safety-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def check_latest_is_complete(self, run):
        """`latest` names a checkpoint folder of this run holding every file, complete."""
        with open(os.path.join(run, "checkpoints", "latest")) as f:
            name = f.read().strip()
        self.assertRegex(name, r"^step-\d{6}$")
        ckpt = os.path.join(run, "checkpoints", name)
        with open(os.path.join(ckpt, "state.json")) as f:
            state = json.load(f)
        self.assertEqual(state["step"], int(name[5:]))
        with open(os.path.join(ckpt, "config.json")) as f:
            self.assertEqual(json.load(f)["model_type"], "llama")
        self.assertTrue(safetensors_complete(os.path.join(ckpt, "model.safetensors")))
        self.assertTrue(safetensors_complete(os.path.join(ckpt, "optimizer.safetensors")))
        return state["step"]

    def test_a_stop_signal_saves_the_step_under_way_and_exits_with_its_status(self):
        for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            run = os.path.join(self.dir, sig.name)
            p = start("train", *TINY, "--steps", "100000", "--out", run)
            wait_for(lambda: len(metric_steps(run)) >= 2)
            p.send_signal(sig)
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, status, err)
            steps = metric_steps(run)
            # Every step that ran is in the checkpoint: nothing is lost since the last save.
            self.assertEqual(self.check_latest_is_complete(run), steps[-1])
            self.assertIn("stopping after this step", err)
            self.assertIn(f"checkpoint saved in {run}/checkpoints/step-{steps[-1]:06}", err)
            self.assertIn("--resume", err)
            self.assertNotIn("final:", out)
        p = subprocess.run([QUARTET, "train", "--resume", run, "--steps", str(steps[-1] + 2), "--quiet",
                            "--sample-tokens", "0"], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(metric_steps(run), list(range(1, steps[-1] + 3)))

    def test_signals_that_arrive_together_are_one_request(self):
        # `timeout` and `kill -- -PGID` reach a process directly and through its group: two
        # signals at once. Stopped, the process receives both before it can run on; they are
        # one request to stop, and the step under way is saved.
        run = os.path.join(self.dir, "together")
        p = start("train", *TINY, "--steps", "100000", "--out", run)
        wait_for(lambda: len(metric_steps(run)) >= 1)
        p.send_signal(signal.SIGSTOP)
        p.send_signal(signal.SIGINT)
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=60)
        # Either may be handled first (each can go to another thread): its status is the run's.
        self.assertIn(p.returncode, (130, 143), err)
        self.assertIn("taken as one request", err)
        self.assertEqual(self.check_latest_is_complete(run), metric_steps(run)[-1])

    def test_a_second_signal_later_aborts_at_once(self):
        # Steps long enough (about a second on two cores) that the run is still in the step
        # under way when the second signal, more than a second after the first, arrives; the
        # pause (SIGSTOP) holds it there while the second's moment comes.
        run = os.path.join(self.dir, "run")
        slow = [a for a in TINY]
        slow[slow.index("--batch") + 1], slow[slow.index("--seq") + 1] = "16", "256"
        p = start("train", *slow, "--steps", "100000", "--out", run)
        wait_for(lambda: len(metric_steps(run)) >= 1)
        p.send_signal(signal.SIGINT)
        while "stopping after this step" not in p.stderr.readline():
            self.assertIsNone(p.poll(), "the run ended before the first signal was handled")
        p.send_signal(signal.SIGSTOP)
        time.sleep(1.3)
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, -signal.SIGTERM, err)
        self.assertNotIn("checkpoint saved", err)

    def test_kill_9_at_random_moments_never_breaks_the_run_folder(self):
        rng = random.Random(14)
        run = os.path.join(self.dir, "run")
        # A checkpoint after every step: most of the time goes to writing them.
        args = ["train", *TINY, "--steps", "100000", "--save-every", "1", "--out", run]
        begun = time.monotonic()
        trials = 0
        while trials < 10 or (time.monotonic() - begun < 6 and trials < 30):
            p = start(*(args if trials == 0 else ["train", "--resume", run, "--save-every", "1", "--quiet",
                                                   "--sample-tokens", "0"]))
            # The kill lands after the set-up (the last set-up line names the data), within about
            # two steps, each of which mostly writes its checkpoint.
            ready = "saved checkpoint" if trials == 0 else "data embedded:austen"
            while not p.stderr.readline().startswith(ready):
                self.assertIsNone(p.poll(), "the run ended before its set-up was done")
            time.sleep(rng.uniform(0, 0.5))
            p.kill()
            p.communicate()
            if p.returncode != -signal.SIGKILL:
                self.fail(f"trial {trials}: the run ended by itself (status {p.returncode})")
            latest = self.check_latest_is_complete(run)
            # metrics.jsonl has every step up to the checkpoint (a later resume rewinds it).
            self.assertEqual(metric_steps(run)[:latest], list(range(1, latest + 1)))
            trials += 1
        p = subprocess.run([QUARTET, "train", "--resume", run, "--steps", str(latest + 1), "--quiet",
                            "--sample-tokens", "0"], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(metric_steps(run), list(range(1, latest + 2)))
        self.assertEqual(self.check_latest_is_complete(run), latest + 1)
        # The folders of saves that were killed are gone; only checkpoints and `latest` remain.
        left = [n for n in os.listdir(os.path.join(run, "checkpoints"))
                if n != "latest" and not re.fullmatch(r"step-\d{6}", n)]
        self.assertEqual(left, [])


if __name__ == "__main__":
    unittest.main()
