"""The library API exported from ``hwlearn``."""

from __future__ import annotations

import subprocess
import sys

import hwlearn


def test_every_exported_name_resolves():
    for name in hwlearn._EXPORTS:
        assert getattr(hwlearn, name) is not None, name
    assert set(hwlearn._EXPORTS) <= set(dir(hwlearn))


def test_import_is_cheap_and_the_cli_does_not_load_torch():
    code = "import sys, hwlearn, hwlearn.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
