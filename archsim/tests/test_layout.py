"""The code's layout keeps its promises: no module imports another's private names, and the layering holds."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(path: Path, importer: str | None = None) -> list[str]:
    """``module: from X import _name`` for each private name ``path`` (module ``importer``, by default named from its
    place in the tree) takes from another module.

    A package's tests may reach into the modules of that package (they test them); nothing else may."""
    importer = importer or module_name(path)
    tested = importer.split(".tests")[0] if ".tests" in importer else None
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("archsim"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != importer:
                if tested is not None and (node.module == tested or node.module.startswith(tested + ".")):
                    continue
                found.append(f"{importer}: from {node.module} import {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    files = sorted((ROOT / "archsim").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    assert files
    assert [line for path in files for line in private_imports(path)] == []


def test_private_import_check_finds_one(tmp_path):
    # Written outside the source tree (which may be read-only), read as if it were a module of archsim.analysis.
    fake = tmp_path / "probe.py"
    fake.write_text("from archsim.transfer.stages import _Rebatcher\nfrom archsim.analysis.run import Analysis\n")
    assert private_imports(fake, "archsim.analysis.probe") == [
        "archsim.analysis.probe: from archsim.transfer.stages import _Rebatcher"
    ]
    # A package's own tests may reach into it.
    assert private_imports(fake, "archsim.transfer.tests.test_probe") == []


def test_layering_contracts_hold():
    """import-linter's contracts in pyproject.toml: the layers and no cycles (also `make lint`)."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[lint]')")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_api_lists_every_application_the_commands_run():
    """Each function a command of the CLI calls from the applications, the knowledge package or the report's analyses
    is importable from :mod:`archsim.api`."""
    import archsim.api

    called = set()
    for node in ast.walk(ast.parse((ROOT / "archsim" / "cli.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            ("archsim.applications.", "archsim.knowledge.", "archsim.report.analyze")
        ):
            called |= {alias.name for alias in node.names}
    missing = sorted(name for name in called if name not in archsim.api.__all__ and name[0].islower())
    assert not missing, f"archsim.api does not export {missing}"
    assert {"ensembles_on_run", "select_models", "add_model", "distill", "checks_on_run", "alpha_matrices"} <= set(
        archsim.api.__all__
    )
