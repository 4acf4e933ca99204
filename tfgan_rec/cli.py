"""What every command line shares: flags, logging, run folders, exit codes.

Flags are generated from the config dataclasses (`config.setting` fields), so
a new setting is added in one place. This module imports no TensorFlow: the
commands load it (quietly) only once their input is known to be good, which
keeps `--help` and input errors fast.
"""
import argparse
import dataclasses
import faulthandler
import logging
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

from tfgan_rec import cluster
from tfgan_rec import config as config_lib
from tfgan_rec.errors import InputError

log = logging.getLogger("tfgan_rec")

# flag -> (section or None for RunConfig's own fields, field name)
FlagTable = Dict[str, Tuple[Optional[str], str]]


def flag_table() -> FlagTable:
  """Every `setting` field of RunConfig and its sections, by flag name."""
  table: FlagTable = {}
  defaults = config_lib.RunConfig()
  sections = [(None, defaults)] + [
      (f.name, getattr(defaults, f.name)) for f in dataclasses.fields(defaults)
      if dataclasses.is_dataclass(getattr(defaults, f.name))]
  for section, instance in sections:
    for field in dataclasses.fields(instance):
      if "help" in field.metadata:
        table[field.metadata["flag"] or field.name] = (section, field.name)
  return table


def _field(section: Optional[str], name: str):
  config = config_lib.RunConfig()
  owner = getattr(config, section) if section else config
  spec = next(f for f in dataclasses.fields(owner) if f.name == name)
  return spec, getattr(owner, name)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
  """One flag per `setting` field; booleans get --x / --no-x."""
  for flag, (section, name) in flag_table().items():
    spec, default = _field(section, name)
    option = f"--{flag.replace('_', '-')}"
    help_text = f"{spec.metadata['help']} (default: {default})"
    if isinstance(default, bool):
      parser.add_argument(option, dest=flag, help=help_text,
                          action=argparse.BooleanOptionalAction)
    else:
      parser.add_argument(option, dest=flag, help=help_text,
                          type=type(default) if default is not None else str)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
  """The parser of `train` (and the base of `tune`'s)."""
  parser = argparse.ArgumentParser(prog=prog, description=description,
                                   argument_default=argparse.SUPPRESS)
  parser.add_argument("--config", help="YAML config; flags override it")
  add_setting_flags(parser)
  parser.add_argument("--resume", action="store_true", default=False,
                      help="continue a killed run from the checkpoints in "
                      "--run-dir (the GANs' last, the recommenders' last "
                      "epoch), with its settings")
  add_verbose_flag(parser)
  return parser


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("-v", "--verbose", action="store_true", default=False,
                      help="debug messages and TensorFlow's own start-up "
                           "lines and warnings")


def resolve_config(args: argparse.Namespace) -> config_lib.RunConfig:
  """Defaults < YAML (--config) < flags; checked."""
  config = config_lib.RunConfig()
  if getattr(args, "config", None):
    config_lib.update(config, config_lib.load_yaml(args.config), args.config)
  given = vars(args)
  for flag, (section, name) in flag_table().items():
    if flag in given:
      owner = getattr(config, section) if section else config
      setattr(owner, name, given[flag])
  if config.data.ratings:
    config.data.dataset = "csv"
  return config.check()


def new_run_dir(config: config_lib.RunConfig) -> str:
  """The run's folder (`run_dir`, default runs/<time>-seed<N>), checked but
  not created: the pipeline creates it once the input is known to be good.
  An existing run is never overwritten."""
  path = config.run_dir or os.path.join(
      "runs", time.strftime("%Y%m%d-%H%M%S") + f"-seed{config.seed}")
  if os.path.exists(os.path.join(path, "metrics.json")):
    raise InputError(f"run directory '{path}' already holds a run; choose "
                     f"another --run-dir (nothing was overwritten).")
  return path


def check_run_dir(run_dir: str) -> None:
  """InputError unless `run_dir` is a folder (a finished training run)."""
  if not os.path.isdir(run_dir):
    raise InputError(f"run directory '{run_dir}' not found; pass a folder "
                     f"written by python -m tfgan_rec.train.")


def setup_logging(verbose: bool) -> None:
  """Our messages as `tfgan_rec: ...` on stderr; TensorFlow's own (absl)
  warnings only with --verbose."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("tfgan_rec: %(message)s"))
  log.handlers[:] = [handler]
  log.propagate = False
  log.setLevel(logging.DEBUG if verbose else logging.INFO)
  for library in ("absl", "tensorflow"):
    logging.getLogger(library).setLevel(logging.INFO if verbose else
                                        logging.ERROR)


def load_tensorflow(verbose: bool) -> None:
  """Imports TensorFlow and initialises its devices, quietly unless
  `verbose`.

  TensorFlow's C++ runtime writes lines such as `I0000 ... oneDNN custom
  operations are on`, `E0000 ... failed call to cuInit` (on any machine
  without a GPU) and `E0000 ... oneDNN supports DT_INT32 only on platforms
  with AVX-512` (at the first training step) straight to file descriptor 2,
  before and regardless of its logging settings, so TF_CPP_MIN_LOG_LEVEL does
  not hide them and users read them as failures. Unless `verbose`, file
  descriptor 2 goes to a temporary file until `run_cli` ends, while
  Python's `sys.stderr` (our messages, warnings, tracebacks) keeps writing to
  the real standard error; a fatal native error (abort, segfault) still
  prints the Python stack there (faulthandler), and `-v` shows everything.

  When `TF_CONFIG` names several workers, the strategy is created here,
  first: MultiWorkerMirroredStrategy configures TensorFlow's collectives,
  which must happen before TensorFlow initialises its devices ("Collective
  ops must be configured at program startup").
  """
  if "tensorflow" in sys.modules:
    return
  if not verbose:
    _divert_native_stderr()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if cluster.workers() > 1:
    from tfgan_rec.gan import loop  # pylint: disable=g-import-not-at-top
    loop.make_strategy()
  tf.config.list_logical_devices()


# (saved fd 2, Python's sys.stderr before, the file native lines go to)
# while native stderr is diverted.
_diverted: List[tuple] = []


def _divert_native_stderr() -> None:
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(2)
  terminal = os.fdopen(os.dup(saved), "w", buffering=1,
                       encoding=sys.stderr.encoding, errors="backslashreplace")
  sink = tempfile.TemporaryFile()
  os.dup2(sink.fileno(), 2)
  _diverted.append((saved, sys.stderr, sink))
  sys.stderr = terminal
  faulthandler.enable(terminal)
  for handler in log.handlers:
    if isinstance(handler, logging.StreamHandler):
      handler.setStream(terminal)


def _restore_native_stderr(replay: bool = False) -> None:
  """Points file descriptor 2 back at the terminal; with `replay`, first
  writes out what TensorFlow printed natively (after a crash it may say
  why)."""
  while _diverted:
    saved, previous, sink = _diverted.pop()
    if replay:
      sink.seek(0)
      sys.stderr.write(sink.read().decode(errors="replace"))
    sink.close()
    sys.stderr.flush()
    faulthandler.disable()
    os.dup2(saved, 2)
    os.close(saved)
    sys.stderr = previous
    for handler in log.handlers:
      if isinstance(handler, logging.StreamHandler):
        handler.setStream(previous)


def run_cli(parser: argparse.ArgumentParser,
            action: Callable[[argparse.Namespace], object],
            argv: Optional[List[str]]) -> int:
  """Parses `argv` and runs `action(args)`; bad input ends as one `error:`
  line on stderr and exit code 2, never a traceback."""
  args = parser.parse_args(argv)
  verbose = getattr(args, "verbose", False)
  setup_logging(verbose)
  try:
    action(args)
  except InputError as err:
    _restore_native_stderr()
    print(f"error: {err}", file=sys.stderr)
    return err.exit_code
  except BaseException:
    _restore_native_stderr(replay=True)
    raise
  _restore_native_stderr()
  return 0
