"""Installing weightscope as a user would: the wheel and sdist built and checked as PyPI checks them, the wheel
installed into a fresh virtual environment with only the core dependencies, and every optional part hinted when it
is missing.

No network: the fresh environment installs the wheel with ``pip --no-index --find-links WHEELHOUSE``, the
wheelhouse holding the core dependencies repacked from the wheels this test environment installed (each
installed distribution's files, as its ``RECORD`` lists them, zipped again under its own ``WHEEL`` tag, with a
new ``RECORD``). pip resolves the dependencies from the built wheel's metadata, so a core dependency missing from
``pyproject.toml`` fails the install, and nothing outside that closure is there to hide it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import weightscope as ws
from weightscope.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
# Not optional parts of weightscope: what the suite and the fixture makers need.
DEVELOPMENT = {"test", "fixtures"}
# Files an installer writes beside a distribution's own: not part of the wheel.
_INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _clean_environment() -> dict[str, str]:
    """This process's environment without what would let the fresh venv see this one (or the network)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PIP_"))}
    environment.pop("VIRTUAL_ENV", None)
    environment.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    return environment


# -- building --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built by ``python -m build`` (the wheel from the sdist) from a copy of the project,
    so that nothing is written into the checkout; without build isolation, which would download setuptools."""
    work = tmp_path_factory.mktemp("build")
    project = work / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, project / name)
    # The kernel an editable install compiled into src is left out: the build compiles its own.
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.pyd")
    shutil.copytree(ROOT / "src", project / "src", ignore=ignored)
    out = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)],
        check=True,
        capture_output=True,
        env=_clean_environment(),
        timeout=600,
    )
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("weightscope-*.whl")
    return wheel


def test_twine_check_passes_on_the_wheel_and_the_sdist(dist: Path) -> None:
    built = sorted(path.name for path in dist.iterdir())
    # The C kernel makes the wheel this interpreter's and platform's (cp311-cp311-linux_x86_64 here).
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheel = f"weightscope-{ws.__version__}-{python}-{python}-{platform}.whl"
    assert built == [wheel, f"weightscope-{ws.__version__}.tar.gz"]
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *sorted(map(str, dist.iterdir()))],
        capture_output=True,
        text=True,
        env=_clean_environment(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_the_version_is_written_once_and_the_wheel_carries_it_with_every_extra(dist: Path) -> None:
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        text = wheel.read(f"weightscope-{ws.__version__}.dist-info/METADATA").decode()
        names = wheel.namelist()
    fields = Parser().parsestr(text)
    assert fields["Version"] == ws.__version__ == metadata.version("weightscope")
    assert sorted(fields.get_all("Provides-Extra")) == sorted(EXTRAS)
    # The package's data is in the wheel: the viewer's page, the typing marker, the protobuf schemas.
    for name in ("viewer/static/app.js", "viewer/static/index.html", "py.typed", "_proto/tensorflow.proto"):
        assert f"weightscope/{name}" in names
    # Each compiled module (every extension pyproject names) and its typing stub; the sdist carries their sources,
    # to be compiled where installed.
    modules = [
        extension["name"].removeprefix("weightscope.") for extension in PYPROJECT["tool"]["setuptools"]["ext-modules"]
    ]
    assert {"_kernels", "_headers", "_tables"} <= set(modules)
    with tarfile.open(dist / f"weightscope-{ws.__version__}.tar.gz") as sdist:
        sources = sdist.getnames()
    for module in modules:
        assert f"weightscope/{module}{sysconfig.get_config_var('EXT_SUFFIX')}" in names, module
        assert (
            f"weightscope/{module}.pyi" in names
            and f"weightscope-{ws.__version__}/src/weightscope/{module}.c" in sources
        )


# -- installing into a fresh environment ------------------------------------------------------


def _core_closure() -> list[metadata.Distribution]:
    """The installed distributions weightscope's core dependencies need, theirs included (markers evaluated)."""
    found: dict[str, metadata.Distribution] = {}
    pending = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    while pending:
        requirement = pending.pop()
        key = canonicalize_name(requirement.name)
        if key in found or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        distribution = metadata.distribution(requirement.name)
        assert requirement.specifier.contains(distribution.version, prereleases=True), (requirement, distribution)
        found[key] = distribution
        assert not requirement.extras, requirement  # none of the core needs another's optional part
        pending.extend(Requirement(text) for text in distribution.requires or [])
    return list(found.values())


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _repack(distribution: metadata.Distribution, wheelhouse: Path) -> Path:
    """An installed distribution as the wheel it was installed from: its files (scripts and bytecode left out: pip
    makes both again), under the tag its ``WHEEL`` file names."""
    files = [file for file in distribution.files or [] if not str(file).startswith("..") and file.suffix != ".pyc"]
    info = next(file.parent for file in files if file.name == "METADATA" and file.parent.name.endswith(".dist-info"))
    wheel_text = distribution.read_text("WHEEL") or ""
    tag = next(line.split(": ", 1)[1] for line in wheel_text.splitlines() if line.startswith("Tag: "))
    path = wheelhouse / f"{info.name.removesuffix('.dist-info')}-{tag}.whl"
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in files:
            if file.parent == info and file.name in _INSTALLER_FILES:
                continue
            data = Path(str(distribution.locate_file(file))).read_bytes()
            wheel.writestr(file.as_posix(), data)
            records.append(_record_line(file.as_posix(), data))
        records.append(f"{info.as_posix()}/RECORD,,")
        wheel.writestr(f"{info.as_posix()}/RECORD", "\n".join(records) + "\n")
    return path


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the built wheel and its core dependencies only; its bin/ directory."""
    work = tmp_path_factory.mktemp("install")
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    for distribution in _core_closure():
        _repack(distribution, wheelhouse)
    venv.EnvBuilder(with_pip=True, clear=True).create(work / "venv")
    bin_dir = work / "venv" / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheelhouse)]
    subprocess.run(
        [*pip, str(_wheel(dist))],
        check=True,
        capture_output=True,
        env=_clean_environment(),
        timeout=600,
    )
    return bin_dir


def _run(bin_dir: Path, *arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "weightscope"), *arguments],
        capture_output=True,
        text=True,
        env=_clean_environment(),
        cwd=cwd,
        timeout=300,
    )


def test_the_installed_wheel_brings_its_compiled_modules(installed: Path) -> None:
    """The wheel's kernel, header parser and table parser load in the fresh environment, and the readers take them
    (not their Python paths)."""
    script = (
        "from weightscope import blocks; from weightscope.formats import safetensors; import numpy as np;"
        "from weightscope.containers import table;"
        "print(blocks._kernels.block_figures(np.ones(3)), safetensors._headers.string_map(b'{\"m\":{}}', 'm'),"
        " table._tables.parse_blocks([], 0))"
    )
    result = subprocess.run(
        [str(installed / "python"), "-c", script], capture_output=True, text=True, env=_clean_environment(), timeout=60
    )
    expected = "(3.0, 3.0, 1.0, 1.0, 0) (5, 7, {}) ([], bytearray(b''), 0)"
    assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr


def test_the_installed_wheel_has_only_the_core_dependencies(installed: Path) -> None:
    listed = subprocess.run(
        [str(installed / "python"), "-m", "pip", "list", "--format=freeze", "--exclude", "pip"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_environment(),
    ).stdout.split()
    expected = {canonicalize_name(distribution.metadata["Name"]) for distribution in _core_closure()}
    got = {canonicalize_name(line.split("==")[0]) for line in listed}
    assert got - {"setuptools"} == expected | {"weightscope"}  # ensurepip's setuptools on older Pythons only


def test_the_installed_command_gives_its_version_and_lists_a_file(
    installed: Path, tmp_path: Path, tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    version = _run(installed, "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"weightscope, version {ws.__version__}\n")
    model = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"dense/kernel": np.ones((2, 3), np.float32), "dense/bias": np.zeros(3)}, model)
    for path in (model, tf_checkpoints["seed"]):  # safetensors, and TensorFlow (protobuf, crc32c, snappy)
        listed = _run(installed, "ls", str(path), cwd=tmp_path)
        assert main(["ls", str(path)]) == 0
        assert (listed.returncode, listed.stdout, listed.stderr) == (0, capsys.readouterr().out, "")
    # Without the extras, what needs them says which to install (a real absence, not a simulated one).
    plot = _run(installed, "plot", str(model), "dense/kernel", "--out", str(tmp_path / "x.png"), cwd=tmp_path)
    assert plot.returncode == ws.UnsupportedFormatError.exit_status
    assert "pip install 'weightscope[plot]'" in plot.stderr and "Traceback" not in plot.stderr
    keras = _run(installed, "convert", str(model), str(tmp_path / "out.weights.h5"), cwd=tmp_path)
    assert "pip install 'weightscope[keras]'" in keras.stderr and keras.returncode != 0


# -- the optional parts -----------------------------------------------------------------------


def _modules(extra: str) -> set[str]:
    """The top-level modules an extra installs (its requirements' import names), other extras' included."""
    modules = set()
    for text in EXTRAS[extra]:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "weightscope":
            modules.update(*(_modules(name) for name in requirement.extras))
        else:
            modules.add(requirement.name.replace("-", "_"))
    return modules


def _hinted_extras() -> set[str]:
    """Every extra an install hint in the source's text names (hints made from a table are not in it)."""
    found = set()
    for path in (ROOT / "src" / "weightscope").rglob("*.py"):
        found.update(re.findall(r"pip install 'weightscope\[(\w+)\]'", path.read_text(encoding="utf-8")))
    return found


def test_all_is_every_optional_part_and_each_hint_names_one() -> None:
    optional = set(EXTRAS) - DEVELOPMENT - {"all"}
    assert optional == {"keras", "plot", "remote", "dask", "hub"}
    assert _modules("all") == set().union(*(_modules(extra) for extra in optional))
    assert _hinted_extras() <= optional  # each hint in the source's text names a real extra (the test below runs each)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for extra in [*optional, "all"]:  # each says what it adds, in the comment above it
        assert re.search(rf"\n# [^\n]+\n(?:# [^\n]+\n)*{extra} = \[", text), extra


# A command needing each optional part; run with that part's modules made unimportable.
NEEDS = {
    "keras": ["convert", "{model}", "{tmp}/out.weights.h5"],
    "plot": ["plot", "{model}", "dense/kernel", "--out", "{tmp}/x.png"],
    "dask": ["runs", "stats", "{model}"],
    "remote": ["ls", "s3://bucket/model.safetensors"],
    "hub": ["ls", "hf://org/model"],
}


@pytest.mark.parametrize("extra", sorted(NEEDS))
def test_a_missing_optional_part_is_a_typed_error_with_its_install_hint(extra: str, tmp_path: Path) -> None:
    assert set(NEEDS) == set(EXTRAS) - DEVELOPMENT - {"all"}  # a new extra needs its case here
    model = ws.save({"dense/kernel": np.ones((2, 3), np.float32)}, tmp_path / "model.safetensors")
    arguments = [part.format(model=model, tmp=tmp_path) for part in NEEDS[extra]]
    # A fresh interpreter in which importing any of the extra's modules raises ImportError, as when not installed.
    program = (
        "import sys\n"
        f"for module in {sorted(_modules(extra))!r}: sys.modules[module] = None\n"
        "from weightscope.cli import main\n"
        f"sys.exit(main({arguments!r}))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=environment, timeout=120
    )
    assert result.returncode in (ws.UsageError.exit_status, ws.UnsupportedFormatError.exit_status), result.stderr
    assert result.stderr.endswith(f"pip install 'weightscope[{extra}]'\n")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.safetensors"]  # nothing written


# -- make test for a user who is not root -------------------------------------------------------


def test_make_test_without_its_programs_says_how_to_install_them_and_fails_unless_root(tmp_path: Path) -> None:
    # `id` says a user's id, `apt-get` records that it ran: the rule under test, not this machine's root or packages.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "apt-get.log"}\n')
    for tool in fake.iterdir():
        tool.chmod(0o755)
    driver = tmp_path / "no" / "chromedriver"
    environment = {**_clean_environment(), "PATH": f"{fake}:{os.environ['PATH']}"}
    command = ["make", "--no-print-directory", "-C", str(ROOT), f"TEST_PROGRAMS={driver}", str(driver)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode != 0
    assert "sudo apt-get install -y --no-install-recommends chromium chromium-driver zsh fish" in result.stderr
    assert not (tmp_path / "apt-get.log").exists()
    (fake / "id").write_text("#!/bin/sh\necho 0\n")  # as root (CI): installed
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "apt-get.log").read_text().splitlines() == [
        "update",
        "install -y --no-install-recommends chromium chromium-driver zsh fish",
    ]
