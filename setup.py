"""Builds the admin gRPC stubs from protos/ as part of every build (wheel, sdist, editable)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        spec = importlib.util.spec_from_file_location(
            "protos_generate", Path(__file__).parent / "protos" / "generate.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate()
        # setuptools listed the packages before the stubs existed (a clean checkout, an sdist,
        # a container build): add the generated package so that it is built too.
        if self.packages is not None and "paygress.v1" not in self.packages:
            self.packages.append("paygress.v1")
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
