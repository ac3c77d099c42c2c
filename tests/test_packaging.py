"""The top-level import names are generic; make sure they are ours."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import proxy

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_proxy_package_is_this_repository() -> None:
    assert pathlib.Path(proxy.__file__).resolve().is_relative_to(ROOT)


def test_river_is_not_imported_on_the_proxy_path() -> None:
    code = (
        "import sys, proxy.cli, proxy.runtime, proxy.admin.app, proxy.commands;"
        "proxy.cli.build_parser();"
        "print('river' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_proxy_matches_console_script() -> None:
    out = subprocess.run([sys.executable, "-m", "proxy", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"ferryman {proxy.__version__}"
