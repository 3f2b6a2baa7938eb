"""The CUDA backend's dependent-launch rule (src/backend/cuda/dependent_launch.cuh), checked on
the sources so that a break shows on machines without a GPU: a kernel launched as a dependent
may start while the kernel before it still runs, so every kernel must wait for its upstream
grids before its first statement, and every launch must go through launch_dependent (or
launch_persistent, which calls it). A kernel that skipped the wait would race with the kernel
before it: the GPU tests see that only when the race is lost. The FP64 reference attention and
the cached sampling path keep plain launches (their kernels are never dependents)."""
import glob
import os
import re
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CUDA = os.path.join(ROOT, "src", "backend", "cuda")
PLAIN_LAUNCH_FILES = {"attention_reference.cu", "attention_cached.cu"}


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def kernels(text):
    """(name, first statement of the body) of each __global__ function defined in text."""
    out = []
    for m in re.finditer(r"__global__", text):
        depth, j = 0, m.end()
        while True:
            c = text[j]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == ";" and depth == 0:
                j = None  # a declaration
                break
            elif c == "{" and depth == 0:
                break
            j += 1
        if j is None:
            continue
        head = text[m.end():j]
        name = re.findall(r"(\w+)\s*\(", re.sub(r"__launch_bounds__\s*\((?:[^()]|\([^()]*\))*\)", "", head))[0]
        # Compile-time statements (constants, static_asserts) touch no memory and may come first.
        statements = (s.strip() for s in text[j + 1:].split(";"))
        out.append((name, next(s for s in statements if not s.startswith(("constexpr", "static_assert")))))
    return out


class DependentLaunchRule(unittest.TestCase):
    def sources(self):
        files = sorted(glob.glob(os.path.join(CUDA, "*.cu")) + glob.glob(os.path.join(CUDA, "*.cuh")))
        self.assertGreater(len(files), 10, CUDA)
        return {os.path.basename(f): strip_comments(open(f).read()) for f in files}

    def test_every_kernel_waits_for_its_upstream_grids_first(self):
        found = 0
        for name, text in self.sources().items():
            if name in PLAIN_LAUNCH_FILES:
                continue
            for kernel, first in kernels(text):
                found += 1
                self.assertEqual(first, "wait_for_upstream_grids()",
                                 f"{name}: kernel {kernel} must start with wait_for_upstream_grids(); it starts "
                                 f"with: {first[:80]}")
        self.assertGreater(found, 40)  # the parser found the kernels at all

    def test_launches_go_through_launch_dependent(self):
        for name, text in self.sources().items():
            if name in PLAIN_LAUNCH_FILES:
                # Their kernels do not wait: they must never be launched as dependents.
                self.assertNotRegex(text, r"launch_(dependent|persistent)\(",
                                    f"{name}: its kernels are launched plainly and do not wait; a dependent launch "
                                    f"of one needs the wait first")
                continue
            self.assertNotIn("<<<", text, f"{name}: a plain <<<...>>> launch; use launch_dependent")

    def test_the_parser_sees_a_kernel_without_the_wait(self):
        bad = "__global__ void __launch_bounds__(256, 2) k(int* p) {\n  *p = 1;\n  wait_for_upstream_grids();\n}\n"
        good = ("template <int V>\n__global__ void g(const float* __restrict__ a) {\n  constexpr int n = V * 2;\n"
                "  static_assert(n > 0, \"n\");\n  wait_for_upstream_grids();\n}\n")
        self.assertEqual(kernels(bad), [("k", "*p = 1")])
        self.assertEqual(kernels(good), [("g", "wait_for_upstream_grids()")])


if __name__ == "__main__":
    unittest.main()
