"""What QUARTET_CUDA decides at configure time (cmake/Cuda.cmake): AUTO builds the CUDA backend
only where nvcc and a GPU are both present, OFF never, and a value that is none of AUTO, ON and
OFF is refused with a message naming it."""
import glob
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.join(HERE, "cuda_option")


def machine_has_gpu():
    if glob.glob("/proc/driver/nvidia/gpus/*"):
        return True
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return listed.returncode == 0 and "GPU" in listed.stdout


def nvcc_present():
    return shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


class CudaOption(unittest.TestCase):
    def configure(self, value):
        with tempfile.TemporaryDirectory() as build:
            return subprocess.run(["cmake", "-S", PROJECT, "-B", build, f"-DQUARTET_CUDA={value}"],
                                  capture_output=True, text=True)

    def test_off_never_builds_it(self):
        result = self.configure("OFF")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("QUARTET_WITH_CUDA=OFF", result.stdout)

    def test_auto_builds_it_only_with_nvcc_and_a_gpu(self):
        result = self.configure("AUTO")
        self.assertEqual(result.returncode, 0, result.stderr)
        expected = "ON" if machine_has_gpu() and nvcc_present() else "OFF"
        self.assertIn(f"QUARTET_WITH_CUDA={expected}", result.stdout)
        if not machine_has_gpu():
            self.assertIn("no NVIDIA GPU on this machine", result.stdout)
            self.assertIn("-DQUARTET_CUDA=ON", result.stdout)

    def test_an_unknown_value_is_refused(self):
        result = self.configure("yes")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("QUARTET_CUDA must be AUTO, ON or OFF, got 'yes'", result.stderr)


if __name__ == "__main__":
    unittest.main()
