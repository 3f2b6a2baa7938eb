"""What several command-line tests share: the program under test ($QUARTET), a fresh folder per
test, and checks of a command's exit status and messages."""
import os
import shutil
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]
TIMEOUT = int(os.environ.get("QUARTET_TEST_TIMEOUT", "180"))
USAGE = 2


def run(*args, env=None):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=TIMEOUT, env=env)


class CliCase(unittest.TestCase):
    prefix = "quartet-cli-"  # of each test's folder under the system's temporary folder

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix=self.prefix)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def ok(self, *args):
        p = run(*args)
        self.assertEqual(p.returncode, 0, f"{args}\n{p.stderr}")
        return p

    def expect(self, code, args, *fragments):
        """Exit status `code`, a message on stderr holding every fragment, and no internal error."""
        p = run(*args)
        self.assertEqual(p.returncode, code, f"{args}: exit {p.returncode}\n{p.stderr}")
        for f in fragments:
            self.assertIn(f, p.stderr, f"{args}")
        self.assertNotIn("internal error", p.stderr)
        return p

    def refused(self, args, *fragments):
        """A usage error (exit 2): the command line or config file is wrong."""
        return self.expect(USAGE, args, *fragments)
