"""dvc.yaml's dependencies are what each stage runs and reads: its code (every pipeline module it
can import, found by reading the imports, and nothing else) and its sections of params.yaml, of
the selected profile and of the defaults, so `dvc params diff` shows effective values."""

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("pipeline", "stages")


def _module_file(name: str) -> Path | None:
    path = REPO / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _imported(path: Path) -> set[str]:
    """Pipeline modules named by any import in ``path``, lazy ones inside functions included."""
    package = list(path.relative_to(REPO).with_suffix("").parts)[:-1]  # where `.` points
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package[: len(package) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] in CODE_ROOTS}


def code_closure(script: Path) -> set[Path]:
    """Every repository Python file that running ``script`` can import (packages' __init__s
    included, since importing a submodule runs them)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:end]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def collapsed(files: set[Path]) -> list[str]:
    """Files as dvc.yaml lists them: a whole package folder where every file in it is used."""
    out: set[str] = set()
    for path in files:
        folder = path.parent
        whole = set(folder.rglob("*.py")) <= files and folder != REPO / "pipeline"
        out.add(str((folder if whole else path).relative_to(REPO)))
    return sorted(out)


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_each_stage_depends_on_exactly_the_code_it_runs():
    for name, stage in stages().items():
        script = REPO / "stages" / f"{name}.py"
        code = sorted(d for d in stage["deps"] if d.split("/")[0] in CODE_ROOTS)
        expected = collapsed(code_closure(script))
        assert code == expected, f"{name}: set its code deps in dvc.yaml to {expected}"
        assert "conf" not in stage["deps"]  # profiles are params (their sections), not files


def _has(config: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return False
        config = config[part]
    return True


def test_each_stage_reads_its_sections_from_params_the_profile_and_the_defaults():
    """Every section a stage reads from params.yaml (the overrides) is also read from the
    selected profile and from conf/defaults.yaml where those files set it; a key that only some
    profiles set would make DVC fail on the others."""
    defaults = yaml.safe_load((REPO / "conf/defaults.yaml").read_text())
    profiles = [yaml.safe_load(p.read_text()) for p in (REPO / "conf/profiles").glob("*.yaml")]
    for name, stage in stages().items():
        files = {k: v for p in stage["params"] if isinstance(p, dict) for k, v in p.items()}
        overrides = [p for p in stage["params"] if isinstance(p, str)]
        assert name in overrides, name
        sections = [o for o in overrides if o != "profile"]
        in_profiles = [s for s in sections if all(_has(p, s) for p in profiles)]
        assert files["conf/profiles/${profile}.yaml"] == in_profiles, name
        assert files["conf/defaults.yaml"] == [s for s in sections if _has(defaults, s)], name
