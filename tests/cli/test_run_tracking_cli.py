"""`quartet train --json` and `--tensorboard`, run as a user runs them. The events files are read
with a TFRecord/protobuf reader written here, independently of the program's own."""
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import unittest

QUARTET = os.environ["QUARTET"]
SMALL = ["--steps", "4", "--batch", "2", "--seq", "64", "--eval-every", "2", "--eval-batches", "1",
         "--final-eval-batches", "2", "--no-plot"]


def run(*args, timeout=600):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=timeout)


def crc32c(data):
    """Bit by bit, from the definition (reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fields(message):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    at = 0

    def varint():
        nonlocal at
        value, shift = 0, 0
        while True:
            b = message[at]
            at += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while at < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, message[at:at + 8]
            at += 8
        elif wire == 2:
            n = varint()
            yield number, wire, message[at:at + n]
            at += n
        elif wire == 5:
            yield number, wire, message[at:at + 4]
            at += 4
        else:
            raise ValueError(f"wire type {wire}")


def read_events(path):
    """[{wall_time, step, file_version, scalars, start}] of a TFRecord file of tensorflow.Event."""
    with open(path, "rb") as f:
        data = f.read()
    events, at = [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[at + 8:at + 12])[0] == masked(crc32c(header)), f"{path}: length CRC"
        body = data[at + 12:at + 12 + length]
        assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == masked(crc32c(body)), \
            f"{path}: data CRC"
        at += 16 + length
        e = {"step": 0, "scalars": {}, "start": False, "file_version": ""}
        for number, wire, value in fields(body):
            if number == 1:
                e["wall_time"] = struct.unpack("<d", value)[0]
            elif number == 2:
                e["step"] = value
            elif number == 3:
                e["file_version"] = value.decode()
            elif number == 5:
                for _, _, v in fields(value):
                    parts = {n: x for n, _, x in fields(v)}
                    e["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
            elif number == 7:  # session_log (6 is the deprecated log_message)
                e["start"] = dict((n, x) for n, _, x in fields(value)).get(1) == 1
        events.append(e)
    return events


def as_float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


class RunTracking(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-tracking-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def metrics(self, out):
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(l) for l in f]

    def test_json_summary_is_the_only_stdout_and_matches_the_files(self):
        out = os.path.join(self.dir, "run")
        started = time.time()
        p = run("train", *SMALL, "--out", out, "--json", "--tensorboard", "--sample-tokens", "8")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.count("\n"), 1, p.stdout)  # one line: the object
        s = json.loads(p.stdout)
        self.assertIn("train [4/4]", p.stderr)  # the progress line went to stderr
        lines = self.metrics(out)
        last = lines[-1]
        self.assertEqual((s["steps"], s["total_steps"], s["start_step"]), (4, 4, 0))
        self.assertEqual(s["tokens"], 4 * 2 * 64)
        self.assertEqual(s["tokens"], last["tokens"])
        self.assertEqual(s["train_loss"], last["loss"])
        self.assertEqual((s["val_loss"], s["val_bpb"], s["val_step"]), (last["val_loss"], last["val_bpb"], 4))
        self.assertEqual(s["skipped_steps"], 0)
        self.assertFalse(s["stopped"])
        self.assertEqual(s["out"], out)
        self.assertEqual(s["metrics"], os.path.join(out, "metrics.jsonl"))
        self.assertEqual(s["checkpoint"], os.path.join(out, "checkpoints", "step-000004"))
        self.assertTrue(os.path.isfile(os.path.join(s["checkpoint"], "state.json")))
        self.assertIsInstance(s["sample"], str)
        self.assertGreater(s["tokens_per_s"], 0)
        self.assertGreaterEqual(s["elapsed_s"], last["elapsed_s"])
        self.assertGreaterEqual(s["wall_s"], s["elapsed_s"] - 1e-9)  # a fresh run: the same clock
        self.assertLess(s["wall_s"], time.time() - started)
        # Every metrics line names the build and when the step ended.
        self.assertRegex(s["commit"], r"^([0-9a-f]{7,40}(-dirty)?|unknown)$")
        for l in lines:
            self.assertEqual(l["commit"], s["commit"])
            self.assertGreaterEqual(l["time"], started)
            self.assertLessEqual(l["time"], time.time())
        self.assertEqual([l["elapsed_s"] for l in lines], sorted(l["elapsed_s"] for l in lines))

        # The events file, read by the reader above: the same steps and scalars as metrics.jsonl.
        files = glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
        self.assertEqual(files, [s["tensorboard"]])
        events = read_events(files[0])
        self.assertEqual(events[0]["file_version"], "brain.Event:2")
        self.assertEqual([e["step"] for e in events[1:]], [1, 2, 3, 4])
        for e, l in zip(events[1:], lines):
            self.assertEqual(e["wall_time"], l["time"])
            self.assertEqual(e["scalars"]["train/loss"], as_float32(l["loss"]))
            self.assertEqual(e["scalars"]["train/lr"], as_float32(l["lr"]))
            self.assertEqual(e["scalars"]["train/grad_norm"], as_float32(l["grad_norm"]))
            self.assertEqual(e["scalars"]["train/tokens_per_s"], as_float32(l["tokens_per_s"]))
            self.assertEqual(e["scalars"].get("val/loss"), as_float32(l["val_loss"]) if "val_loss" in l else None)

        # Resumed with --json: the summary says where it started; a second events file restarts.
        p = run("train", "--resume", out, "--steps", "6", "--json", "--tensorboard", "--sample-tokens", "0",
                "--no-plot", "--quiet")
        self.assertEqual(p.returncode, 0, p.stderr)
        s2 = json.loads(p.stdout)
        self.assertEqual((s2["steps"], s2["start_step"], s2["total_steps"]), (6, 4, 6))
        self.assertIsNone(s2["sample"])
        self.assertGreater(s2["elapsed_s"], s["elapsed_s"])  # counts the first process's time too
        self.assertLess(s2["wall_s"], s2["elapsed_s"])
        files = sorted(glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*")))
        self.assertEqual(files[-1], s2["tensorboard"])
        self.assertEqual(len(files), 2)
        resumed = read_events(files[1])
        self.assertEqual([(e["step"], e["start"]) for e in resumed[1:]], [(5, True), (5, False), (6, False)])
        lines = self.metrics(out)
        self.assertEqual([l["step"] for l in lines], [1, 2, 3, 4, 5, 6])
        self.assertGreater(lines[4]["elapsed_s"], lines[3]["elapsed_s"])

    def test_without_json_the_human_output_is_unchanged(self):
        p = run("train", *SMALL, "--quiet", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("final: step 4"), p.stdout)

    def test_errors_leave_stdout_empty(self):
        p = run("train", *SMALL, "--json", "--tensorboard")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--tensorboard needs --out", p.stderr)
        self.assertEqual(p.stdout, "")
        p = run("train", "--json", "--steps", "0")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--steps", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_a_run_stopped_by_a_signal_prints_the_summary_with_stopped(self):
        out = os.path.join(self.dir, "stopped")
        metrics = os.path.join(out, "metrics.jsonl")
        p = subprocess.Popen([QUARTET, "train", "--steps", "100000", "--batch", "2", "--seq", "64", "--recipe", "bf16",
                              "--eval-every", "0", "--final-eval-batches", "1", "--sample-tokens", "0", "--quiet",
                              "--out", out, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
            self.assertLess(time.monotonic(), deadline, "no step written")
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 143, stderr)
        s = json.loads(stdout)
        self.assertTrue(s["stopped"])
        steps = self.metrics(out)
        self.assertEqual(s["steps"], steps[-1]["step"])
        self.assertEqual(s["total_steps"], 100000)
        self.assertEqual(s["checkpoint"], os.path.join(out, "checkpoints", f"step-{s['steps']:06}"))
        self.assertIn("--resume", stderr)

    def test_json_summary_without_out(self):
        p = run("train", *SMALL, "--json", "--quiet", "--sample-tokens", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        s = json.loads(p.stdout)
        for key in ("out", "metrics", "checkpoint", "tensorboard"):
            self.assertIsNone(s[key], key)
        self.assertEqual(s["steps"], 4)


if __name__ == "__main__":
    unittest.main()
