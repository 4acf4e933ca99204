"""The package's structure, read from its sources: the import graph is a DAG
layered data -> models -> augmentation -> pipeline -> command lines,
function-level imports stand only in the command-line entry points, and no
function is longer than 60 lines. `--help` loads no TensorFlow."""
import ast
import pathlib
import subprocess
import sys

import tfgan_rec

PACKAGE = pathlib.Path(tfgan_rec.__file__).parent
# Where function-level imports may stand: they keep `--help` fast there.
ENTRY_POINTS = {"tfgan_rec.cli", "tfgan_rec.train", "tfgan_rec.tune",
                "tfgan_rec.export", "tfgan_rec.synthesize"}
# Lower layers never import higher ones.
LAYERS = [
    {"tfgan_rec", "tfgan_rec.errors", "tfgan_rec.config", "tfgan_rec.cluster"},
    {"tfgan_rec.data"},
    {"tfgan_rec.evaluate", "tfgan_rec.baselines", "tfgan_rec.layers",
     "tfgan_rec.feature_groups",
     "tfgan_rec.compact_index", "tfgan_rec.privacy", "tfgan_rec.plots",
     "tfgan_rec.privacy_audit"},
    {"tfgan_rec.recommender", "tfgan_rec.recommender.graph", "tfgan_rec.gan"},
    {"tfgan_rec.augmentation", "tfgan_rec.thin_users", "tfgan_rec.new_users",
     "tfgan_rec.next_items", "tfgan_rec.signatures",
     "tfgan_rec.saved_models", "tfgan_rec.report", "tfgan_rec.release"},
    {"tfgan_rec.pipeline"},
    {"tfgan_rec.tuning", "tfgan_rec.gan_oracle"},
    {"tfgan_rec.cli"},
    {"tfgan_rec.train", "tfgan_rec.tune", "tfgan_rec.export",
     "tfgan_rec.synthesize"},
]
MAX_FUNCTION_LINES = 60


def modules():
  """{module name: parsed source} for every module of the package."""
  parsed = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    parsed[name] = ast.parse(path.read_text(), str(path))
  return parsed


def imported(node, module_name, known):
  """The package modules an import node names: `from pkg import sub` names
  the submodule, `from pkg import name` the package."""
  if isinstance(node, ast.Import):
    names = [alias.name for alias in node.names]
  else:
    base = node.module or ""
    if node.level:
      package = module_name.rsplit(".", node.level)[0]
      base = f"{package}.{base}" if base else package
    names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known
             else base for alias in node.names]
  found = set()
  for name in names:
    while name and name not in known:
      name = name.rpartition(".")[0]
    # A module importing its own package reads the package's __init__,
    # which imports the module itself: not a dependency.
    if name and not module_name.startswith(name + "."):
      found.add(name)
  return found


def import_graph(parsed):
  graph = {name: set() for name in parsed}
  for name, tree in parsed.items():
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        graph[name] |= imported(node, name, parsed) - {name}
  return graph


def layer_of(name):
  """The layer of a module, or of the subpackage it belongs to."""
  owners = [name]
  while owners[-1].count(".") > 1:
    owners.append(owners[-1].rpartition(".")[0])
  for owner in owners:
    for index, layer in enumerate(LAYERS):
      if owner in layer:
        return index
  raise AssertionError(f"{name} belongs to no layer of LAYERS; add it")


def test_import_graph_is_a_layered_dag():
  graph = import_graph(modules())
  for name, targets in graph.items():
    for target in targets:
      if target == "tfgan_rec" or target.startswith(name + "."):
        continue  # the package itself (env setup) and own submodules
      assert layer_of(target) <= layer_of(name), (
          f"{name} (layer {layer_of(name)}) imports {target} (layer "
          f"{layer_of(target)})")
  visiting, done = set(), set()

  def visit(name, path):
    assert name not in visiting, f"import cycle: {' -> '.join(path)}"
    if name in done:
      return
    visiting.add(name)
    for target in sorted(graph[name]):
      visit(target, path + [target])
    visiting.discard(name)
    done.add(name)

  for name in graph:
    visit(name, [name])


def test_the_package_root_imports_none_of_its_modules():
  # `import tfgan_rec` only sets the environment TensorFlow needs.
  assert import_graph(modules())["tfgan_rec"] == set()


def test_no_module_imports_names_from_its_own_package_init():
  # `from tfgan_rec.data import X` inside tfgan_rec.data.* reads a package
  # that is still initialising (a hidden cycle); submodules are fine.
  parsed = modules()
  for name, tree in parsed.items():
    package = name.rpartition(".")[0]
    if package in ("", "tfgan_rec"):
      continue
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == package:
        names = [a.name for a in node.names
                 if f"{package}.{a.name}" not in parsed]
        assert not names, f"{name} imports {names} from {package}"


def test_the_recommender_and_the_gans_do_not_import_each_other():
  graph = import_graph(modules())
  for name, targets in graph.items():
    for mine, other in (("tfgan_rec.gan", "tfgan_rec.recommender"),
                        ("tfgan_rec.recommender", "tfgan_rec.gan")):
      if name.startswith(mine):
        assert not [t for t in targets if t.startswith(other)], name


def test_function_level_imports_only_in_entry_points():
  for name, tree in modules().items():
    if name in ENTRY_POINTS:
      continue
    for function in ast.walk(tree):
      if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        inner = [n for n in ast.walk(function)
                 if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not inner, (f"{name}.{function.name} imports inside a "
                           f"function (line {inner[0].lineno})")


def test_no_function_longer_than_60_lines():
  for name, tree in modules().items():
    for function in ast.walk(tree):
      if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = function.end_lineno - function.lineno + 1
        assert length <= MAX_FUNCTION_LINES, (
            f"{name}.{function.name} is {length} lines")


def test_help_loads_no_tensorflow():
  for command in ("train", "tune", "export", "synthesize"):
    probe = (f"import sys, contextlib, io\n"
             f"from tfgan_rec import {command}\n"
             f"with contextlib.redirect_stdout(io.StringIO()):\n"
             f"  try:\n    {command}.main(['--help'])\n"
             f"  except SystemExit:\n    pass\n"
             f"print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], check=True,
                            capture_output=True, text=True)
    assert result.stdout.strip() == "False", command
