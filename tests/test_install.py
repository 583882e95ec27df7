"""pyproject.toml and constraints.txt agree, on every supported platform, without the network.

`.ci/check-install` resolves the pinned set with pip against PyPI for each Python and platform;
these tests check offline what it relies on, and its pure helpers.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import tomllib

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PYTHONS = ("3.11", "3.12", "3.13")
PLATFORMS = {  # name: (sys_platform, platform_system, platform_machine)
    "linux-x86_64": ("linux", "Linux", "x86_64"),
    "linux-aarch64": ("linux", "Linux", "aarch64"),
    "macos-arm64": ("darwin", "Darwin", "arm64"),
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier  # one exact pin a line
            assert spec.operator == "==", line
            assert req.marker or canonical(req.name) not in out, f"{req.name} pinned twice"
            out[canonical(req.name)] = spec.version
    return out


def target_environment(python: str, platform: str) -> dict[str, str]:
    sys_platform, system, machine = PLATFORMS[platform]
    return {
        **default_environment(),
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": sys_platform,
        "platform_system": system,
        "platform_machine": machine,
    }


def all_requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_every_direct_requirement_is_pinned_within_its_range():
    pinned = pins()
    for req in all_requirements():
        name = canonical(req.name)
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pinned[name]}, outside pyproject's {req}"
        )


def test_the_test_extra_has_the_notebook_lint_and_worker_tools():
    names = {canonical(Requirement(r).name) for r in PROJECT["optional-dependencies"]["test"]}
    assert {"pytest", "nbclient", "nbformat", "ipykernel", "ruff"} <= names
    # `make test` spreads the suite over pytest-xdist's workers (-n).
    assert " -n $(PYTEST_WORKERS)" in (ROOT / "Makefile").read_text()
    assert "pytest-xdist" in names


@pytest.mark.parametrize("extra", ["cuda12", "tpu"])
def test_accelerator_extras_pin_the_same_jax(extra):
    (req,) = [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    assert req.name == "jax" and req.extras == {extra}
    assert str(req.specifier) == f"=={pins()['jax']}"


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_exactly_one_tensorflow_applies_on_each_target(python, platform):
    env = target_environment(python, platform)
    chosen = [
        canonical(r.name)
        for r in all_requirements()
        if canonical(r.name) in ("tensorflow", "tensorflow-cpu")
        and (r.marker is None or r.marker.evaluate(env))
    ]
    # tensorflow-cpu has wheels for Linux x86-64 only (and Windows); elsewhere the full build.
    assert chosen == ["tensorflow-cpu" if platform == "linux-x86_64" else "tensorflow"]


def load_check_install():
    path = ROOT / ".ci" / "check-install"
    loader = importlib.machinery.SourceFileLoader("check_install", str(path))
    spec = importlib.util.spec_from_loader("check_install", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_check_install_passes_the_project_requirements_and_extras():
    check = load_check_install()
    base = check.requirements(PROJECT, "project")
    assert base[: len(PROJECT["dependencies"])] == PROJECT["dependencies"]
    assert "pytest>=8" in " ".join(base) and any(r.startswith("psutil") for r in base)
    assert check.requirements(PROJECT, "cuda12") == PROJECT["optional-dependencies"]["cuda12"]
    # A self-reference `name[extra]` expands to that extra.
    project = {
        "name": "fashion_jax",
        "dependencies": ["numpy"],
        "optional-dependencies": {"test": ["pytest"], "bench": ["Fashion-JAX[test]", "psutil"]},
    }
    assert sorted(check.requirements(project, "project")) == ["numpy", "psutil", "pytest"]
    assert check.pinned_names(ROOT / "constraints.txt") == set(pins())


def test_check_install_reads_what_a_wheel_needs():
    needs = load_check_install().wheel_needs
    assert needs("jaxlib-0.10.2-cp311-cp311-manylinux_2_27_x86_64.whl") == ((2, 27), None)
    assert needs("h5py-3.14.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl") == (
        (2, 17),
        None,
    )
    assert needs("tensorflow-2.21.0-cp312-cp312-macosx_12_0_arm64.whl") == (None, (12, 0))
    assert needs("six-1.17.0-py2.py3-none-any.whl") == (None, None)
