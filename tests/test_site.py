"""The site builds with warnings as errors (the same command as `bash scripts/book.sh site`)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_site_builds_without_warnings():
    done = subprocess.run(["bash", "scripts/book.sh", "build"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (ROOT / "_build" / "html" / "index.html").is_file()
