"""Hydra's "Key 'max_iter' not in 'EMConfig'" as the project's one ``error:`` line.

A key the structured configs (``experiments.configs``) do not have stops Hydra while it
composes the config, before ``main`` runs, with a message of six lines. ``install``
(called by ``common.one_line_errors``) makes that one line naming the key, the node
that lacks it and where a key of that name lives now::

    error: algorithm.max_iter is not a setting of algorithm=em (its keys: name);
    max_iter is set as stop.max_iter, or algorithm.max_iter with algorithm=meanshift

Hydra has no public hook for composition errors: ``install`` wraps
``hydra._internal.utils.run_and_report``, the function that prints them, and passes
every other error (and every error under ``HYDRA_FULL_ERROR=1``) to it unchanged.
"""

import dataclasses
import functools
import os
import sys
import typing

from experiments import configs

ALGORITHMS = (configs.EMConfig, configs.GradientConfig, configs.MeanShiftConfig,
              configs.VariationalConfig)


def _keys(node, prefix: str = ""):
    """(full key, note) of every setting of the dataclass ``node``; the algorithm's
    keys carry the ``algorithm=<name>`` option they belong to."""
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        key = prefix + f.name
        if node is configs.Config and f.name == "algorithm":
            for algo in ALGORITHMS:
                option = f"algorithm={algo.name}"
                yield from ((k, option) for k, _ in _keys(algo, "algorithm."))
        elif dataclasses.is_dataclass(hints[f.name]):
            yield from _keys(hints[f.name], key + ".")
        else:
            yield key, ""


def message(full_key: str, object_type) -> str:
    """The one line for a key ``full_key`` that the node of ``object_type`` lacks."""
    parent, _, leaf = full_key.rpartition(".")
    name = getattr(object_type, "__name__", str(object_type))
    if object_type in ALGORITHMS:
        where = f"algorithm={object_type.name}"
    else:
        where = parent or "the config's root"
    line = f"{full_key} is not a setting of {where}"
    if dataclasses.is_dataclass(object_type):
        line += f" (its keys: {', '.join(f.name for f in dataclasses.fields(object_type))})"
    else:
        line += f" ({name})"
    homes = [key + (f" with {note}" if note else "")
             for key, note in _keys(configs.Config)
             if key.rpartition(".")[2] == leaf and key != full_key]
    if homes:
        line += f"; {leaf} is set as {', or '.join(homes)}"
    return line


def one_line(err: BaseException) -> str | None:
    """The ``error:`` line for a composition error about a missing key, else None."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = err.__cause__
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return None
    full_key = getattr(cause, "full_key", None)
    if not full_key or "not in" not in str(getattr(cause, "msg", "")):
        return None
    return "error: " + message(full_key, getattr(cause, "object_type", None))


def install() -> None:
    """Print a missing key's composition error as one ``error:`` line (exit 1)."""
    from hydra._internal import utils
    from hydra.errors import ConfigCompositionException

    report = utils.run_and_report
    if getattr(report, "_one_line", False):
        return

    @functools.wraps(report)
    def run_and_report(func):
        try:
            return func()
        except ConfigCompositionException as err:
            line = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else one_line(err)
            if line is None:
                return report(functools.partial(_raise, err))
            print(line, file=sys.stderr)
            sys.exit(1)

    run_and_report._one_line = True
    utils.run_and_report = run_and_report


def _raise(err: BaseException):
    raise err
