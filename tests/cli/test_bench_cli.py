"""The `quartet bench` command's argument checks, run as a user runs it (QUARTET names the
binary). The measurements themselves need a GPU and run on the GPU machine
(scripts/gpu-run-tests.sh bench); without one the command must say so and fail."""
import os
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]


def run(*args):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=120)


class BenchCommand(unittest.TestCase):
    def test_unknown_section_is_named(self):
        p = run("bench", "--only", "quantize,matmul")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("unknown section 'matmul'", p.stderr)

    def test_empty_recipe_entry_is_refused(self):
        p = run("bench", "--recipes", "quartet2,,nvidia")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("empty entry", p.stderr)

    def test_unknown_shape_set_is_named(self):
        p = run("bench", "--only", "linear", "--sets", "7B,13B")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("unknown shape set '13B'", p.stderr)

    def test_empty_or_unused_shape_set_is_refused(self):
        p = run("bench", "--sets", ",7B")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("empty entry", p.stderr)
        p = run("bench", "--only", "quantize", "--sets", "7B")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--only leaves out", p.stderr)

    def test_repetitions_must_be_positive(self):
        p = run("bench", "--reps", "0")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--reps", p.stderr)

    def test_gpus_needs_the_training_section_alone(self):
        p = run("bench", "--gpus", "2")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("give --only train", p.stderr)
        p = run("bench", "--only", "train", "--gpus", "-1")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--gpus must be 1 or more, got -1", p.stderr)
        p = run("bench", "--only", "train", "--gpus", "2", "--pytorch", "bench/pytorch_reference.py")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("run it without --gpus", p.stderr)

    def test_trace_dir_needs_the_training_section_and_a_folder(self):
        p = run("bench", "--only", "ops", "--trace-dir", "/tmp")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--trace-dir traces the training cases", p.stderr)
        with tempfile.TemporaryDirectory() as d:
            blocker = os.path.join(d, "file")
            with open(blocker, "w") as f:
                f.write("kept")
            p = run("bench", "--only", "train", "--trace-dir", blocker)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("--trace-dir: cannot make the folder", p.stderr)
            with open(blocker) as f:
                self.assertEqual(f.read(), "kept")  # nothing written over it

    def test_without_a_gpu_it_fails_and_says_why(self):
        if os.path.exists("/dev/nvidia0"):
            self.skipTest("a GPU is present: the benchmark would run")
        p = run("bench", "--quick", "--only", "quantize")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("bench:", p.stderr)


if __name__ == "__main__":
    unittest.main()
