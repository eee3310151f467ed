"""Every project import of the benchmark scripts resolves (they run rarely; a rename must not leave them
behind): each module exists and each imported name is a submodule or a top-level name of its module. Read
from the sources, without importing TensorFlow."""

import ast
import glob
import importlib.util
import os

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = ("remi_tf", "remi", "tests")


def top_level_names(module):
    spec = importlib.util.find_spec(module)
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def is_submodule(package, name):
    spec = importlib.util.find_spec(package)
    return spec.submodule_search_locations is not None and importlib.util.find_spec(f"{package}.{name}") is not None


def unresolved(path):
    missing = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, name in modules:
            top = module.split(".")[0]
            if top in ("pipelines", "export"):  # the folders' installed names are remi_tf.pipelines, remi_tf.export
                missing.append(module)
            elif top not in PROJECT:
                continue
            elif importlib.util.find_spec(module) is None:
                missing.append(module)
            elif name is not None and not is_submodule(module, name) and name not in top_level_names(module):
                missing.append(f"{module}.{name}")
    return missing


def test_every_project_import_of_the_benchmarks_resolves():
    scripts = sorted(glob.glob(os.path.join(REPOSITORY, "benchmarks", "*.py")))
    assert scripts
    wrong = {os.path.basename(path): names for path in scripts if (names := unresolved(path))}
    assert not wrong, wrong
