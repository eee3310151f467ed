"""The README is one screen to start and links every page of docs/; every relative link in the README and the
docs resolves to a file of the repository."""

import os
import re

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPOSITORY, "docs")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def markdown_pages():
    return [os.path.join(REPOSITORY, "README.md")] + sorted(
        os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))


def relative_links(path):
    text = open(path, encoding="utf-8").read()
    return [target for target in LINK.findall(text) if "://" not in target]


def test_every_relative_link_resolves():
    broken = [f"{os.path.relpath(page, REPOSITORY)} -> {target}" for page in markdown_pages()
              for target in relative_links(page)
              if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(page), target)))]
    assert not broken, broken


def test_the_readme_links_every_docs_page_and_stays_short():
    readme = os.path.join(REPOSITORY, "README.md")
    linked = {os.path.normpath(os.path.join(REPOSITORY, target)) for target in relative_links(readme)}
    pages = {os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md")}
    assert pages <= linked, sorted(os.path.basename(page) for page in pages - linked)
    words = len(open(readme, encoding="utf-8").read().split())
    assert words < 1200, words  # the rest belongs in docs/


def test_the_module_map_names_every_module_of_each_package():
    """docs/layout.md (DESIGN.md's module map) lists each package's modules under the package's line."""
    text = open(os.path.join(DOCS, "layout.md"), encoding="utf-8").read()
    block = text.split("```")[1]
    packages = ("remi_tf", "remi", "pipelines", "export")
    line_starts = [match.start() for match in re.finditer(r"^\S", block, re.M)]  # each entry's first line
    for package in packages:
        start = re.search(rf"^{package}/", block, re.M).start()
        entry = block[start:min([later for later in line_starts if later > start] + [len(block)])]
        modules = {name[:-3] for name in os.listdir(os.path.join(REPOSITORY, package))
                   if name.endswith(".py") and not name.startswith("__")}
        subpackages = {name + "/" for name in os.listdir(os.path.join(REPOSITORY, package))
                       if os.path.isfile(os.path.join(REPOSITORY, package, name, "__init__.py"))}
        listed = listed_names(entry[len(package) + 1:])
        assert modules <= listed, (package, sorted(modules - listed))  # every module, as a list entry
        assert listed <= modules | subpackages, (package, sorted(listed - modules - subpackages))


def listed_names(entry):
    """The names a module-map entry lists: the first word of each item of its comma (or "and") separated list,
    descriptions in parentheses or after a colon left out, so a module named like a word of prose ("input",
    "metrics") counts only where it is listed."""
    depth, kept = 0, []
    for character in entry:
        depth += character == "("
        kept.append(character if depth == 0 else "")
        depth -= character == ")"
    items = re.split(r",|\band\b|;", "".join(kept))
    return {match.group(1) for item in items if (match := re.match(r"\s*([\w/]+)", item.split(":")[0]))}
