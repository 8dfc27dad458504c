"""The README's "Scaling out" process-pool example runs as the script it is.

``tests/test_readme.py`` executes every README block as a module (its
``if __name__ == "__main__":`` part does not run there); this runs the process
example as ``python example.py``, so its worker processes re-import it the
way they would for a user, and its assertion that two ``runner.run`` calls
share one warm worker is checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_process_pool_example_runs_as_a_script(tmp_path: Path) -> None:
    [code] = [
        block
        for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        if "ProcessExecutor(max_workers=2)" in block
    ]
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard only
    )
    assert out.returncode == 0, out.stderr
    digest, report = out.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{12}", digest)
    assert re.fullmatch(r"d0=[0-9a-f]{12} d1=[0-9a-f]{12} d2=[0-9a-f]{12} d3=[0-9a-f]{12}", report)
