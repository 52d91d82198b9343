"""The layering rules of DESIGN.md, checked on the source tree, and ruff's verdict on it.

- ``models`` never imports ``service``;
- a system (``models/<system>/``) never imports another system: what two share lives in
  ``models/common/`` or ``models/perception/``;
- no module imports another module's private (``_name``) names;
- ``service/`` names no model outside its default-model setting: it reads the models'
  declarations instead.
"""

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from models import registry

ROOT = Path(__file__).resolve().parent.parent
SHARED = {"common", "perception"}


def python_files(folder):
    return sorted((ROOT / folder).rglob("*.py"))


def imports(path):
    """(module, [names]) of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]


def systems():
    return sorted(p.name for p in (ROOT / "models").iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name not in SHARED)


def test_the_tree_has_the_systems_this_test_guards():
    assert {"atvgnet", "davs"} <= set(systems())


def test_models_never_import_service():
    found = [f"{path.relative_to(ROOT)}: {module}" for path in python_files("models")
             for module, _ in imports(path) if module == "service" or module.startswith("service.")]
    assert found == []


@pytest.mark.parametrize("system", systems())
def test_a_system_imports_no_other_system(system):
    others = set(systems()) - {system}
    found = [f"{path.relative_to(ROOT)}: {module}" for path in python_files(f"models/{system}")
             for module, _ in imports(path) if module.split(".")[:2] in [["models", o] for o in others]]
    assert found == []


@pytest.mark.parametrize("folder", ["models", "service"])
def test_no_private_names_are_imported_across_modules(folder):
    found = [f"{path.relative_to(ROOT)}: {module}.{name}" for path in python_files(folder)
             for module, names in imports(path) for name in names
             if name.startswith("_") and not name.startswith("__") and module.split(".")[0] in ("models", "service")]
    assert found == []


def test_service_names_no_model():
    names = "|".join(re.escape(name) for name in registry.REGISTRY)
    pattern = re.compile(rf"""["'](?:{names})["']""")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in python_files("service") for number, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line) and not line.lstrip().startswith("#")]
    # The one model ``service/`` may name is the default a user gets without asking.
    assert [line for line in found if "default_model" not in line] == []


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is part of the dev extra: pip install -e '.[dev]'")
    done = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
