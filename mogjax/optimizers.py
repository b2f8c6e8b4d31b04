"""The optax side of gradient ascent: which transformation steps the parameters.

``fit_gradient`` takes any ``optax.GradientTransformation``, or the name of an optax
optimiser (``"adam"``, ``"sgd"``, ``"lbfgs"``, ...: any optax alias with a
``learning_rate`` argument) with its keyword arguments. A named optimiser is wrapped
in ``optax.inject_hyperparams``, so its learning rate and every other float
hyperparameter live in the optimiser state: a new value does not compile a new
program. Integer and boolean arguments (``memory_size``, ``nesterov``) change the
program and are compiled in. The same holds for a transformation the caller built
with ``optax.inject_hyperparams``: ``hyperparams`` given to ``fit_gradient`` replace
the values in its state.

A schedule multiplies the step by ``optax.cosine_decay_schedule`` or
``optax.exponential_decay`` started at 1 (``optax.scale_by_schedule``), so the
learning rate stays a traced hyperparameter; ``clip_norm`` chains
``optax.clip_by_global_norm`` in front, its ``max_norm`` injected too.
"""

import functools
import inspect
import numbers

import jax
import jax.numpy as jnp
import optax

from mogjax import _validation as v

SCHEDULES = {
    "constant": None,
    "cosine": (optax.cosine_decay_schedule, "decay_steps", {"alpha": 0.0}),
    "exponential": (optax.exponential_decay, "transition_steps", {"decay_rate": 0.01}),
}
DEFAULT_LEARNING_RATE = 1e-2
_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _alias(name):
    fn = getattr(optax, name, None) if isinstance(name, str) else None
    if not callable(fn) or "learning_rate" not in inspect.signature(fn).parameters:
        raise ValueError(
            f"Invalid value for 'optimizer': {name!r}; it must be the name of an optax "
            "optimiser with a learning_rate (e.g. 'adam', 'sgd', 'lbfgs') or an "
            "optax.GradientTransformation"
        )
    return fn


def _unit_schedule(schedule: str, steps: int, items: tuple):
    make, length, defaults = SCHEDULES[schedule]
    kwargs = {length: steps, **defaults, **dict(items)}
    allowed = set(inspect.signature(make).parameters) - {"init_value", length}
    unknown = sorted(set(dict(items)) - allowed)
    if unknown:
        raise ValueError(f"Unknown arguments for schedule {schedule!r}: {unknown}; it "
                         f"accepts {sorted(allowed)}")
    return make(1.0, **kwargs)


@functools.lru_cache(maxsize=64)
def _named(name: str, fixed: tuple, floats: tuple, schedule: str, schedule_items: tuple,
           steps: int, clip: bool) -> optax.GradientTransformation:
    """One transformation per structure (cached: jit sees the same object again)."""
    fn = _alias(name)
    static = [p for p, par in inspect.signature(fn).parameters.items()
              if type(par.default) is int] + [key for key, val in fixed if type(val) is int]
    opt = optax.inject_hyperparams(fn, static_args=static)(
        **dict(fixed), **{key: 0.0 for key in floats})
    parts = [opt]
    if schedule != "constant":
        parts.append(optax.scale_by_schedule(_unit_schedule(schedule, steps, schedule_items)))
    if clip:
        parts.insert(0, optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=1.0))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


def make_optimizer(optimizer, learning_rate, schedule: str, schedule_kwargs, clip_norm,
                   steps: int, kwargs: dict) -> tuple[optax.GradientTransformation, dict]:
    """``(transformation, hyperparams)``: the values to set in its injected state."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Invalid value for 'schedule': {schedule!r}; it must be one of "
                         f"{tuple(SCHEDULES)}")
    if schedule_kwargs and schedule == "constant":
        raise ValueError("schedule_kwargs need a schedule other than 'constant'")
    hyper = {}
    if clip_norm is not None:
        hyper["max_norm"] = v.check_positive(clip_norm, "clip_norm")
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            hyper["learning_rate"] = v.check_positive(learning_rate, "learning_rate")
        if schedule != "constant" or kwargs:
            raise ValueError("schedule and optimizer arguments cannot be given with an "
                             "optax.GradientTransformation: build them into the transformation")
        if clip_norm is not None:
            optimizer = _clipped(optimizer)
        missing = sorted(set(hyper) - _injected_names(optimizer))
        if missing:
            raise ValueError(f"{missing} cannot be set on this optax.GradientTransformation: "
                             "build it with optax.inject_hyperparams to vary them per call, "
                             "or build the values into it")
        return optimizer, hyper
    fn = _alias(optimizer)
    allowed = set(inspect.signature(fn).parameters) - {"learning_rate"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"Unknown arguments for optimizer {optimizer!r}: {unknown}; it "
                         f"accepts {sorted(allowed)}")
    if learning_rate is None and optimizer != "lbfgs":
        learning_rate = DEFAULT_LEARNING_RATE
    if learning_rate is not None:
        hyper["learning_rate"] = v.check_positive(learning_rate, "learning_rate")
    elif schedule != "constant":
        raise ValueError("A schedule needs a learning_rate (lbfgs without one uses its line search)")
    floats = {key: val for key, val in kwargs.items()
              if isinstance(val, float) or (isinstance(val, numbers.Real)
                                            and not isinstance(val, numbers.Integral))}
    fixed = {key: val for key, val in kwargs.items() if key not in floats}
    if learning_rate is None:
        fixed["learning_rate"] = None
    else:
        floats["learning_rate"] = learning_rate
    try:
        opt = _named(optimizer, tuple(sorted(fixed.items())), tuple(sorted(floats)), schedule,
                     tuple(sorted((schedule_kwargs or {}).items())), steps, clip_norm is not None)
    except TypeError as err:  # unhashable argument values
        raise ValueError(f"Arguments for optimizer {optimizer!r} must be numbers, booleans "
                         f"or other hashable values (they are compiled in): {err}") from err
    return opt, {**hyper, **floats}


@functools.lru_cache(maxsize=64)
def _clipped(opt):
    clip = optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=1.0)
    return optax.chain(clip, opt)


def _injected_states(state) -> list:
    is_injected = lambda s: isinstance(s, _INJECTED)
    return [s for s in jax.tree.leaves(state, is_leaf=is_injected) if is_injected(s)]


def _injected_names(opt) -> set[str]:
    state = jax.eval_shape(opt.init, jnp.zeros(1))
    return {name for s in _injected_states(state) for name in s.hyperparams}


def with_hyperparams(state, values: dict):
    """``state`` with the injected hyperparameters named in ``values`` replaced."""

    def replace(s):
        if not isinstance(s, _INJECTED):
            return s
        hp = {key: jnp.asarray(values[key], jnp.asarray(val).dtype) if key in values else val
              for key, val in s.hyperparams.items()}
        return s._replace(hyperparams=hp)

    return jax.tree.map(replace, state, is_leaf=lambda s: isinstance(s, _INJECTED))


def uses_line_search(state) -> bool:
    """Whether the optimiser keeps a line search's value (L-BFGS): then it is monotone."""
    return optax.tree.get(state, "value") is not None
