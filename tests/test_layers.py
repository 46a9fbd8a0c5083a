"""The package's layers point one way, and its public API is importable from the root."""

import ast
import subprocess
import sys
from pathlib import Path

import lora_recycle

PACKAGE = Path(lora_recycle.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_merging_is_tensor_maths_and_never_imports_models():
    offenders = {p.name: sorted(m for m in _imports(p) if m.startswith("lora_recycle.models"))
                 for p in (PACKAGE / "merging").glob("*.py")}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_package_root_reexports_the_public_api():
    code = ("from lora_recycle import merge_adapters, preset, load_task, MergeSettings, Catalog\n"
            "import sys\n"
            "assert preset('ours').method == 'ours' and callable(merge_adapters) and callable(load_task)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_root_stays_cheap():
    code = "import sys, lora_recycle\nassert 'torch' not in sys.modules, 'import lora_recycle pulled in torch'\n"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_catalog_reads_never_import_torch():
    """`pool list/show/stats` read the catalog only: the pool and adapters packages load their names lazily, so
    those commands start (and fail on a bad --db) without torch's second of import time."""
    code = ("import sys\n"
            "from lora_recycle.pool import Catalog, pool_stats\n"
            "from lora_recycle.adapters import coordinates\n"
            "import lora_recycle.cli.pool\n"
            "assert 'torch' not in sys.modules, 'reading the catalog pulled in torch'\n"
            "from lora_recycle.pool import scan_pool, load_pool_adapters\n"
            "from lora_recycle.adapters import LoraAdapter, read_adapter\n"
            "import lora_recycle.pool as pool\n"
            "assert 'torch' in sys.modules and {'scan_pool', 'Catalog'} <= set(dir(pool))\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_tables_come_from_the_registries():
    from lora_recycle.recipe.choices import methods_table, strategies_table, tuners_table

    readme = (PACKAGE.parents[1] / "README.md").read_text()
    for table in (methods_table, strategies_table, tuners_table):
        assert "\n".join(table()) in readme, "README out of date: run python -m lora_recycle.recipe.choices"


def test_similarity_strategies_match_the_similarity_registry():
    from lora_recycle.selection.similarity import SIMILARITIES
    from lora_recycle.selection.strategies import STRATEGIES

    assert {n for n, s in STRATEGIES.items() if s.needs == "target"} == set(SIMILARITIES)
