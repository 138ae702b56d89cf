"""The layers of ../shared/ARCHITECTURE.md: no pipeline package imports one above it, so each
can be read and tested alone and data flows one way. `pipeline.io` (atomic writes, hashing) is
a utility every layer may use."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UTILITIES = {"io"}
MAY_IMPORT = {
    "config": set(),
    "text": set(),
    "diffusion": set(),
    "models": {"text"},
    "data": {"config", "text"},
    "tracking": {"config"},
    "sampling": {"diffusion", "models", "text"},
    "training": {"config", "text", "diffusion", "models", "data", "tracking", "sampling"},
    "evaluation": {"config", "text", "diffusion", "models", "data", "tracking", "sampling"},
}


def _packages_imported(path: Path) -> set[str]:
    """The pipeline packages ``path`` names in any import, lazy ones inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            names = [f"pipeline.{path.parent.name}.{node.module}"]
        found |= {n.split(".")[1] for n in names if n.startswith("pipeline.") and n.count(".") >= 1}
    return found


def test_no_package_imports_a_layer_above_it():
    wrong = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((REPO / "pipeline" / package).rglob("*.py")):
            extra = _packages_imported(path) - allowed - UTILITIES - {package}
            wrong += [f"{path.relative_to(REPO)} imports pipeline.{name}" for name in sorted(extra)]
    assert not wrong, "\n".join(wrong)


def test_every_package_has_its_layer():
    packages = {p.name for p in (REPO / "pipeline").iterdir() if list(p.glob("*.py"))}
    assert packages - UTILITIES == set(MAY_IMPORT)
