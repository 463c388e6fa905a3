"""``python -m hptransfer.env``: make the environment importable without taking anything that works away.

`mup` (the test oracle) pulls a `torchvision` built for CUDA that cannot load against a CPU torch ("operator
torchvision::nms does not exist"), and `transformers` and `timm` import `torchvision` when it is installed, so a
broken one breaks them. This removes `torchvision` only when importing it fails; a working one (a GPU user's) is
kept. hptransfer itself never imports torchvision.
"""

from __future__ import annotations

import subprocess
import sys


def torchvision_loads() -> tuple[bool, str]:
    """Whether ``import torchvision`` works, tried in a fresh interpreter (a failed import can leave torch's
    operator registry half-filled in this one). Returns (loads or is absent, what happened)."""
    proc = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if proc.returncode == 0:
        return True, "torchvision loads"
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    if "No module named 'torchvision'" in last:
        return True, "torchvision is not installed"
    return False, last


def main() -> int:
    ok, what = torchvision_loads()
    if ok:
        print(f"hptransfer.env: {what}; nothing to do")
        return 0
    print(f"hptransfer.env: torchvision cannot load ({what}); uninstalling it (transformers and timm import it)")
    return subprocess.call([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "torchvision"])


if __name__ == "__main__":
    sys.exit(main())
