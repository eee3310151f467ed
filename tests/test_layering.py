"""The package graph runs one way (docs/layout.md): the `remi` command line imports the rest; pipelines and
export import remi_tf; remi_tf imports neither, and nothing imports the command line."""

import ast
import os

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# package folder -> the packages its modules must not import
FORBIDDEN = {"remi_tf": ("pipelines", "export", "remi"), "pipelines": ("export", "remi"),
             "export": ("pipelines", "remi"), "remi": ()}


def imported_packages(path):
    """The top-level names of every module `path` imports, at module level or inside functions."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_import_runs_back_up_the_package_graph():
    wrong = []
    for package, forbidden in FORBIDDEN.items():
        for directory, _, files in os.walk(os.path.join(REPOSITORY, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    for imported in imported_packages(path) & set(forbidden):
                        wrong.append(f"{os.path.relpath(path, REPOSITORY)} imports {imported}")
    assert not wrong, wrong
