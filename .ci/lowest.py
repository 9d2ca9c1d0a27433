"""Helpers of CI's lowest-versions step (.ci/run).

``python3 .ci/lowest.py floors [pyproject.toml]`` prints ``name==floor`` for every
``>=`` requirement of the project's dependencies and test extra: the constraints the
step installs under. torch is left out: the step keeps the CPU build the main step
installed (every lower torch on PyPI is a multi-GB CUDA build), so torch's floor is
not exercised there.

``pip config list | python3 .ci/lowest.py uv-index-args`` prints, one a line, the
arguments that give uv pip's index, extra indexes and find-links (uv reads none of
pip's configuration). A ``PIP_*`` variable wins over the files, as in pip.
"""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

KEEP = {"torch"}
INDEX_OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = []
    for req in project["dependencies"] + project["optional-dependencies"]["test"]:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*([^;]*?)\s*", req)
        if not m:
            sys.exit(f"lowest.py: cannot read the requirement {req!r}")
        name, spec = m.group(1).lower(), m.group(3)
        floor = re.search(r">=\s*([^,\s]+)", spec)
        if name in KEEP or not floor:
            continue
        lines.append(f"{name}=={floor.group(1)}")
    return lines


def uv_index_args(pip_config_list: str) -> list[str]:
    """From ``pip config list`` (lines ``section.option='value'``, ``:env:.option`` for
    variables): the last file value of each option, or its variable's."""
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in pip_config_list.splitlines():
        key, sep, value = line.strip().partition("=")
        option = key.rsplit(".", 1)[-1]
        if not sep or option not in INDEX_OPTIONS:
            continue
        (env if key.startswith(":env:") else files)[option] = ast.literal_eval(value)
    args = []
    for option, flag in INDEX_OPTIONS.items():
        for value in {**files, **env}.get(option, "").split():
            args += [flag, value]
    return args


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "floors":
        print("\n".join(floors(Path(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml"))))
    elif command == "uv-index-args":
        print("\n".join(uv_index_args(sys.stdin.read())))
    else:
        sys.exit("usage: lowest.py floors [pyproject.toml] | lowest.py uv-index-args < (pip config list)")
