"""The package graph runs one way (docs/layout.md): the `remi` command line imports the rest; pipelines and
export (installed as remi_tf.pipelines and remi_tf.export) import remi_tf's core; the core imports neither,
and nothing imports the command line. Nothing imports the folders by their top-level names."""

import ast
import os

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# package folder -> the packages its modules must not import (remi_tf/ without its two linked subpackages)
TOP_LEVEL_NAMES = ("pipelines", "export")
FORBIDDEN = {"remi_tf": ("remi_tf.pipelines", "remi_tf.export", "remi"), "pipelines": ("remi_tf.export", "remi"),
             "export": ("remi_tf.pipelines", "remi"), "remi": (), "tests": (), "benchmarks": ()}


def imported_packages(path):
    """The packages `path` imports (remi_tf.pipelines / remi_tf.export as such, else the top-level name), at
    module level or inside functions."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(package(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(package(node.module))
    return names


def package(module):
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "remi_tf" and parts[1:2] in (["pipelines"], ["export"]) else parts[0]


def test_no_import_runs_back_up_the_package_graph():
    wrong = []
    for package, forbidden in FORBIDDEN.items():
        for directory, _, files in os.walk(os.path.join(REPOSITORY, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    for imported in imported_packages(path) & {*forbidden, *TOP_LEVEL_NAMES}:
                        wrong.append(f"{os.path.relpath(path, REPOSITORY)} imports {imported}")
    assert not wrong, wrong
