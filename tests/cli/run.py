"""Running the real ``callbridge`` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def callbridge(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
               cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """``callbridge ARGS`` to completion; the environment without any CALLBRIDGE_ variable of
    the caller's, plus ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)
