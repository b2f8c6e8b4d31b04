"""Structured configs: the schema Hydra checks every run's config against.

Registered in Hydra's ConfigStore; the YAML files under ``conf/`` fill them in. A
misspelt key or a value of the wrong type or outside an enum stops the run with
Hydra's message before any data is loaded. ``validate`` checks every value the
schema cannot (ranges, NaN, the synthetic data generator's sizes, and through the
library the init method and any optax optimiser's name, arguments and schedule), so a
bad value is one line naming its key before any run is created.
"""

import copy
import dataclasses
import difflib
import inspect
import math
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
import optax
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from mogjax.init import canonical_init
from mogjax.optimizers import make_optimizer


class CovarianceType(str, Enum):
    full = "full"
    tied = "tied"
    diag = "diag"
    spherical = "spherical"
    identity = "identity"


class Missing(str, Enum):
    error = "error"  # a NaN in the data is an error naming it
    marginalize = "marginalize"  # fit_em(missing="marginalize"): EM on observed entries


class DataSource(str, Enum):
    """Where a run's data come from (the ``data`` group's option)."""

    faithful = "faithful"
    iris = "iris"
    synthetic = "synthetic"  # mogjax.make_mixture: random means, covariances, weights
    separated = "separated"  # mogjax.make_separated_mixture: controlled overlap
    file = "file"


DataName = DataSource  # its name before data.name became a free label


class SeparatedCovariance(str, Enum):
    identity = "identity"
    random = "random"  # rotated, eigenvalues in [0.5, 1]


class SeparatedWeights(str, Enum):
    equal = "equal"
    dirichlet = "dirichlet"


@dataclass
class DataConfig:
    source: DataSource = DataSource.faithful
    # a free label: the run's `data` tag, names and titles (null: the source's name,
    # or a file's stem)
    name: Optional[str] = None
    path: Optional[str] = None  # for source=file: a .csv or .npy
    columns: Optional[int] = None  # for source=file: the number of columns it must have
    # the data's column names (weights column left out), as the logged model takes
    # them; null: a file's header, a shipped data set's names, else x1, x2, ...
    column_names: Optional[List[str]] = None
    header: Optional[bool] = None  # for a .csv: null = a first row with no number in it
    # for source=file: the column holding each row's weight (1 = the first, -1 = the
    # last); the other columns are the data. null: every row weighs 1.
    weights_column: Optional[int] = None
    n_samples: int = 1000  # synthetic and separated
    n_components: int = 3
    n_features: int = 2
    separation: float = 5.0  # synthetic: about this many sds; separated: c of c sqrt(d)
    covariance: SeparatedCovariance = SeparatedCovariance.identity  # separated only
    weights: SeparatedWeights = SeparatedWeights.equal  # separated only
    seed: int = 0
    standardize: bool = False  # scale every feature to unit variance


class Precision(str, Enum):
    float32 = "float32"
    float64 = "float64"


@dataclass
class ModelConfig:
    k: int = 2
    covariance_type: CovarianceType = CovarianceType.full
    reg_covar: float = 1e-6
    init: str = "kmeans++"
    n_init: int = 1
    equal_weights: bool = False
    missing: Missing = Missing.error  # marginalize: EM only (algorithm=em, one seed)


@dataclass
class StopConfig:
    """One stopping rule for EM and every optimiser (``mogjax.results``): stop when
    ``patience`` consecutive iterations or steps each gained less than ``tol`` in mean
    log-likelihood, or after ``max_iter`` of them; ``tol: 0`` runs exactly
    ``max_iter``; ``seconds`` gives every method the same warm compute time instead."""

    tol: float = 1e-5  # above float32 rounding of a mean log-likelihood (~1e-6)
    patience: int = 1
    max_iter: int = 1000  # iterations (EM) or steps (gradient ascent)
    seconds: Optional[float] = None  # a budget of warm seconds (then tol is not used)


class Acceleration(str, Enum):
    squarem = "squarem"  # Varadhan & Roland 2008
    daarem = "daarem"  # Henderson & Varadhan 2019
    overrelaxed = "overrelaxed"  # Salakhutdinov & Roweis 2003
    ecg = "ecg"  # Salakhutdinov, Roweis & Ghahramani 2003


# Methods of ``compare`` that iterate EM's map (the rest are optax optimisers).
EM_METHODS = ("em", *(a.value for a in Acceleration))


@dataclass
class EMConfig:
    name: str = "em"
    # accelerated EM over the same E-step and M-step (mogjax.accelerated); null: plain EM
    acceleration: Optional[Acceleration] = None


@dataclass
class GradientConfig:
    name: str = "gradient"
    batch_size: Optional[int] = None


@dataclass
class MeanShiftConfig:
    name: str = "meanshift"
    bandwidth: Optional[float] = None  # None: estimate_bandwidth(quantile)
    quantile: float = 0.3
    max_iter: int = 300
    tol: float = 1e-3
    bin_seeding: bool = False
    cluster_all: bool = True


class WeightPrior(str, Enum):
    dirichlet_process = "dirichlet_process"
    dirichlet_distribution = "dirichlet_distribution"


@dataclass
class VariationalConfig:
    """A variational Bayesian mixture (``mogjax.fit_variational``): ``model.k`` is the
    most components the posterior may use."""

    name: str = "variational"
    weight_prior: WeightPrior = WeightPrior.dirichlet_process
    weight_concentration_prior: Optional[float] = None  # None: scikit-learn's 1 / k
    threshold: float = 0.01  # an effective component weighs more than this


@dataclass
class OptimizerConfig:
    name: str = "adam"
    learning_rate: Optional[float] = 0.05  # None: the library's default (lbfgs: line search)
    schedule: str = "constant"
    clip_norm: Optional[float] = None
    options: dict[str, Any] = field(default_factory=dict)  # e.g. momentum for sgd


class RegisterMetric(str, Enum):
    bic = "bic"
    final_log_likelihood = "final_log_likelihood"


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    experiment_name: str = "mogjax"
    run_name: Optional[str] = None
    summary_param: Optional[str] = None  # multirun: plot a metric against this param
    summary_metric: str = "bic"
    log_plots: bool = True  # the curve and cluster plots of every run (off: faster sweeps)
    log_models: bool = True  # every mixture fit's MLflow model (off: faster sweeps)
    fallback_dir: str = "mlflow-fallback"  # where a run's results go if the store fails
    # multirun: register the best run's model (lowest bic, highest final_log_likelihood)
    # as model_name, alias champion (experiments/registry.py)
    register_best: Optional[RegisterMetric] = None
    model_name: str = "mogjax"


@dataclass
class TheoryConfig:
    """EM's theory at the fitted point (``mogjax.theory.fit_diagnostics``) on EM runs
    and comparisons: the rate, the largest fraction of missing information, the
    empirical rate and the responsibilities' entropy."""

    enabled: bool = True
    # the dense (p, p) matrices only up to this many free parameters (a k=5, d=10 full
    # mixture has 329; each costs about p E-steps); the empirical rate always
    max_parameters: int = 400


@dataclass
class CacheConfig:
    enabled: bool = True
    dir: Optional[str] = None  # null: .cache/jax in the project folder (git-ignored)


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    algorithm: Any = MISSING
    optimizer: OptimizerConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = 0
    n_seeds: int = 1  # > 1 (EM): seeds seed..seed+n_seeds-1 in one compiled program
    progress_every: int = 0  # 0: quiet; N: report every N iterations
    stop: StopConfig = field(default_factory=StopConfig)
    compare: list[str] = field(default_factory=lambda: ["em", "adam"])
    target_gap: float = 1e-3  # compare: "reached" = within this of the best final value
    tags: list[str] = field(default_factory=list)
    # float32 or float64 for every array of the run (jax.enable_x64 around it);
    # null: JAX's setting (float32 unless JAX_ENABLE_X64=1). Logged resolved.
    precision: Optional[Precision] = None
    # JAX's persistent compilation cache, so a program compiled once on this machine
    # is read back by every later process (sweeps over processes, a second make run)
    compilation_cache: CacheConfig = field(default_factory=CacheConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="algorithm", name="em_schema", node=EMConfig)
    cs.store(group="algorithm", name="gradient_schema", node=GradientConfig)
    cs.store(group="algorithm", name="meanshift_schema", node=MeanShiftConfig)
    cs.store(group="algorithm", name="variational_schema", node=VariationalConfig)
    cs.store(group="optimizer", name="schema", node=OptimizerConfig)
    cs.store(group="tracking", name="schema", node=TrackingConfig)


def _count(minimum: int):
    return (lambda v: v is not None and v >= minimum), f"an integer >= {minimum}"


def _real(low: float, open_low: bool = False, optional: bool = False):
    def ok(v):
        if v is None:
            return optional
        return math.isfinite(v) and (v > low if open_low else v >= low)
    what = f"a finite number {'>' if open_low else '>='} {low:g}"
    return ok, what + (" or null" if optional else "")


# Every value the schema's types leave open: (key, (test, requirement)); a key of a
# group only where that option is chosen (``_applies``).
CHECKS = [
    ("seed", _count(0)), ("n_seeds", _count(1)), ("progress_every", _count(0)),
    ("target_gap", _real(0.0)),
    ("model.k", _count(1)), ("model.n_init", _count(1)), ("model.reg_covar", _real(0.0)),
    ("stop.tol", _real(0.0)), ("stop.patience", _count(1)), ("stop.max_iter", _count(1)),
    ("stop.seconds", _real(0.0, open_low=True, optional=True)),
    ("data.n_samples", _count(1)), ("data.n_components", _count(1)),
    ("data.n_features", _count(1)), ("data.separation", _real(0.0)), ("data.seed", _count(0)),
    ("data.columns", ((lambda v: v is None or v >= 1), "an integer >= 1 or null")),
    ("data.weights_column", ((lambda v: v is None or v != 0),
                             "a column number (1 = the first, -1 = the last) or null")),
    ("algorithm.bandwidth", _real(0.0, open_low=True, optional=True)),
    ("algorithm.quantile", ((lambda v: 0 < v <= 1), "a number in (0, 1]")),
    ("algorithm.max_iter", _count(1)), ("algorithm.tol", _real(0.0)),
    ("algorithm.batch_size", ((lambda v: v is None or v >= 1), "an integer >= 1 or null")),
    ("algorithm.weight_concentration_prior", _real(0.0, open_low=True, optional=True)),
    ("algorithm.threshold", ((lambda v: 0 < v < 1), "a number in (0, 1)")),
    ("theory.max_parameters", _count(0)),
]


FILE_KEYS = ("data.columns", "data.weights_column")
# Methods of ``compare`` that are not optax optimisers: EM and its accelerations.
NOT_OPTIMIZERS = EM_METHODS


def plain(value) -> str:
    """A config value as its string: an enum member's value, else ``str(value)``."""
    return str(getattr(value, "value", value))


def _applies(cfg, key: str) -> bool:
    group = key.split(".")[0]
    if group == "data":
        source = DataSource(cfg.data.source).value
        return source in (("file",) if key in FILE_KEYS else ("synthetic", "separated"))
    return group != "algorithm" or OmegaConf.select(cfg, key, default=MISSING) is not MISSING


def is_swept(key: str, swept) -> bool:
    """Whether ``key`` takes a sweep's values: it or a group above it is swept (or a
    preset is, which may set anything)."""
    return any(key == s or key.startswith(s + ".") or s == "experiment" for s in swept)


ALGORITHM_SCHEMAS = {"em": EMConfig, "gradient": GradientConfig, "meanshift": MeanShiftConfig,
                     "variational": VariationalConfig}


def _schema_of(cfg, path: str):
    if path == "algorithm":
        return ALGORITHM_SCHEMAS.get(str(OmegaConf.select(cfg, "algorithm.name")))
    if path == "":
        return Config
    hint = typing.get_type_hints(Config).get(path)
    return hint if dataclasses.is_dataclass(hint) else None


def _nearest(key: str, valid: list[str]) -> str:
    return difflib.get_close_matches(key, valid, n=1, cutoff=0.0)[0]


def check_known_keys(cfg) -> None:
    """Every key of the config is one the schema declares: Hydra's ``+key=value`` adds
    a key to any node, and a key nothing reads would be logged as a setting it never
    was. Raises ValueError naming the key and the nearest valid one (under
    ``optimizer``, an argument of the optax constructor goes in ``optimizer.options``)."""
    for path in ("", "data", "model", "algorithm", "optimizer", "tracking", "stop",
                 "compilation_cache"):
        node = cfg if path == "" else OmegaConf.select(cfg, path, default=None)
        schema = _schema_of(cfg, path)
        if not isinstance(node, DictConfig) or schema is None:
            continue
        valid = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            key = str(key)
            if key in valid or (path == "" and key == "hydra"):
                continue
            full = f"{path}.{key}" if path else key
            where = f"{path}." if path else ""
            if path == "optimizer":
                arguments = optax_arguments(OmegaConf.select(cfg, "optimizer.name"))
                if key in arguments:
                    raise ValueError(
                        f"{full} is not a setting of the optimizer group: an argument of "
                        f"optax.{cfg.optimizer.name} goes in optimizer.options "
                        f"(+optimizer.options.{key}=...)")
                valid = valid + [f"options.{a}" for a in arguments]
            raise ValueError(f"{full} is not a setting (unknown key {key!r}); the nearest "
                             f"valid one is {where}{_nearest(key, valid)}")


def optax_arguments(name) -> list[str]:
    """The keyword arguments of ``optax.<name>`` besides ``learning_rate`` (none for
    a name that is not an optax optimiser)."""
    fn = getattr(optax, str(name), None)
    if not callable(fn):
        return []
    try:
        return [p for p in inspect.signature(fn).parameters if p != "learning_rate"]
    except (TypeError, ValueError):
        return []


def validate(cfg, swept=()) -> None:
    """Every value checked (see module); raises ValueError naming the key, before any
    data is loaded or any run is created. ``swept``: keys a multirun sweeps, left to
    each job's own check (the sweep's config holds none of their values yet)."""
    check_known_keys(cfg)
    fixed = lambda *keys: not any(is_swept(k, swept) for k in keys)
    if fixed("tags"):
        for tag in cfg.tags:  # stored joined by commas (the runs' tag ``study``)
            if not str(tag).strip() or any(c in str(tag) for c in ",\n\r\t"):
                raise ValueError(f"tags entry {str(tag)!r}: a tag must be non-empty text "
                                 "without commas, tabs or line breaks (the tags are stored "
                                 "joined by commas, and could not be told apart)")
    for key, (ok, requirement) in CHECKS:
        if fixed(key, "data.source") and _applies(cfg, key) and not ok(
                value := OmegaConf.select(cfg, key)):
            raise ValueError(f"{key} must be {requirement}, got {value}")
    if fixed("model.init"):
        try:
            canonical_init(cfg.model.init)
        except ValueError as err:
            raise ValueError(f"model.init: {err}") from None
    if fixed("data.source", "data.path") and (
            cfg.data.source == DataSource.file and not cfg.data.path):
        raise ValueError("data=file needs data.path=PATH (a .csv or .npy file)")
    if fixed("n_seeds", "algorithm") and cfg.n_seeds > 1 and cfg.algorithm.name != "em":
        raise ValueError(f"n_seeds={cfg.n_seeds} batches EM fits; algorithm "
                         f"{cfg.algorithm.name!r} runs one seed per job (use -m seed=...)")
    if fixed("data.source", "data.weights_column") and (
            cfg.data.weights_column is not None and cfg.data.source != DataSource.file):
        raise ValueError("data.weights_column names a column of a file: it needs data=file")
    if fixed("data.weights_column", "algorithm") and (
            cfg.data.weights_column is not None and cfg.algorithm.name == "variational"):
        raise ValueError("algorithm=variational takes no sample weights: set "
                         "data.weights_column=null")
    if fixed("model.missing", "algorithm", "n_seeds") and (
            cfg.model.missing == Missing.marginalize and (
                cfg.algorithm.name != "em" or cfg.n_seeds > 1)):
        raise ValueError("model.missing=marginalize is EM's (mogjax.fit_em): it needs "
                         "algorithm=em and n_seeds=1")
    if fixed("algorithm", "model.covariance_type") and (
            cfg.algorithm.name == "variational" and cfg.model.covariance_type == "identity"):
        raise ValueError("algorithm=variational has a prior on every covariance: "
                         "model.covariance_type must be full, tied, diag or spherical")
    if fixed("algorithm", "model", "stop"):
        kind = str(cfg.algorithm.name)
        for key in UNUSED_SETTINGS.get(kind, ()):
            default = OmegaConf.select(OmegaConf.structured(Config(model=ModelConfig())), key)
            if key not in ONLY_LEFT_OUT and OmegaConf.select(cfg, key) != default:
                raise ValueError(f"{key}={plain(OmegaConf.select(cfg, key))} does nothing "
                                 f"with algorithm={kind}: leave it at {plain(default)}")
    accelerated = OmegaConf.select(cfg, "algorithm.acceleration", default=None) is not None
    if fixed("algorithm", "n_seeds", "model.missing") and accelerated and (
            cfg.n_seeds > 1 or cfg.model.missing == Missing.marginalize):
        raise ValueError("algorithm.acceleration runs one in-memory fit of complete data: it "
                         "needs n_seeds=1 and model.missing=error")
    if fixed("n_seeds", "stop.seconds") and cfg.n_seeds > 1 and cfg.stop.seconds is not None:
        raise ValueError(f"n_seeds={cfg.n_seeds} runs every seed in one program, which "
                         "stops by tol or max_iter: set stop.seconds=null")
    if fixed("optimizer", "algorithm", "compare", "stop.max_iter"):
        names = ([cfg.optimizer.name] if cfg.algorithm.name == "gradient" else []) + [
            m for m in cfg.compare if m not in NOT_OPTIMIZERS]
        for name in dict.fromkeys(names):
            check_optimizer(optimizer_config(cfg, name), cfg.stop.max_iter)


def check_optimizer(opt, steps: int) -> None:
    """An optimiser's settings as ``mogjax.fit_gradient`` takes them: any optax
    optimiser's name, its arguments, the schedule (the library's checks)."""
    try:
        make_optimizer(opt.name, opt.learning_rate, opt.schedule, None, opt.clip_norm, steps,
                       dict(opt.options))
    except (ValueError, TypeError) as err:
        raise ValueError(f"optimizer {opt.name!r}: {err}") from None


def validate_data(cfg, x) -> None:
    """What the loaded data must allow, before any run exists: at least ``model.k``
    rows for a mixture, a mini-batch no larger than the data, and memory for the fit
    (``check_memory``)."""
    n = x.shape[0]
    if cfg.algorithm.name != "meanshift" and n < cfg.model.k:
        raise ValueError(f"the data have {n} rows, fewer than model.k={cfg.model.k} "
                         "components")
    batch = OmegaConf.select(cfg, "algorithm.batch_size", default=None)
    if cfg.algorithm.name == "gradient" and batch is not None and batch > n:
        raise ValueError(f"algorithm.batch_size={batch} is more than the data's {n} rows")
    if cfg.algorithm.name != "meanshift":
        check_memory(n, x.shape[1], int(cfg.model.k), plain(cfg.model.covariance_type),
                     precision_of(cfg))


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_estimate(n: int, d: int, k: int, covariance_type: str, precision: str) -> dict:
    """Bytes a fit of ``k`` components on ``n`` rows of ``d`` features holds at once, at
    least: the rows-by-components arrays of the initialisation and the E-step
    (k-means++ distances, responsibilities: ``n * k`` numbers) and the cache of the
    rows' quadratic features (``mogjax.estep``) when it is used."""
    from mogjax import gaussian
    from mogjax.estep import FEATURE_CACHE_BYTES

    size = 8 if precision == "float64" else 4
    rows_by_components = n * k * size
    features = n * gaussian.n_quadratic_features(d, covariance_type) * size
    cache = features if features <= FEATURE_CACHE_BYTES else 0
    return {"rows_by_components": rows_by_components, "feature_cache": cache,
            "total": rows_by_components + cache + n * d * size}


def check_memory(n: int, d: int, k: int, covariance_type: str, precision: str,
                 available: int | None = None) -> None:
    """One error line, before any run or compute, when the fit's memory estimate
    (``memory_estimate``) exceeds the memory available (it used to end in a 51-line
    RESOURCE_EXHAUSTED traceback after a run was created)."""
    available = available_memory() if available is None else available
    need = memory_estimate(n, d, k, covariance_type, precision)
    if available is None or need["total"] <= available:
        return
    gb = lambda b: f"{b / 2**30:.1f} GB"
    raise ValueError(
        f"the fit needs about {gb(need['total'])} ({n} rows x {k} components x "
        f"{8 if precision == 'float64' else 4} bytes = {gb(need['rows_by_components'])}, "
        f"feature cache {gb(need['feature_cache'])}), more than the {gb(available)} "
        "available: lower model.k or the number of rows, or use precision=float32")


def validate_compare(cfg, swept=()) -> None:
    """``validate``, and what a comparison from one shared start needs."""
    validate(cfg, swept)
    if not is_swept("compare", swept) and not list(cfg.compare):
        raise ValueError("compare=[] names no method: list at least one, e.g. "
                         "compare=[em,adam]")
    if is_swept("model", swept):
        return
    if cfg.model.missing == Missing.marginalize:
        raise ValueError("model.missing=marginalize is EM's alone; compare needs complete "
                         "data (model.missing=error)")
    if cfg.model.n_init != 1 or cfg.model.equal_weights:
        raise ValueError("compare starts every method from one shared start of the same "
                         "model: it needs model.n_init=1 and model.equal_weights=false")


# ------------------------------------------------- what one run is configured with

CONF = Path(__file__).resolve().parents[1] / "conf"
# The data settings each data set uses (the others are another data set's defaults).
DATA_FIELDS = {"faithful": (), "iris": (), "file": ("path", "columns", "header", "weights_column"),
               "synthetic": ("n_samples", "n_components", "n_features", "separation", "seed"),
               "separated": ("n_samples", "n_components", "n_features", "separation",
                             "covariance", "weights", "seed")}
# What each kind of run leaves out of its params: settings it does not read.
UNUSED = {"compare": ("algorithm", "optimizer", "n_seeds"),
          "em": ("optimizer", "compare", "target_gap"),
          "gradient": ("compare", "target_gap", "n_seeds", "theory"),
          "meanshift": ("model", "optimizer", "stop", "compare", "target_gap", "n_seeds",
                        "theory"),
          "variational": ("optimizer", "compare", "target_gap", "n_seeds", "theory")}
# Single settings a kind of run does not read: left out of its params too, and refused
# when set to anything but their default (``validate``), but for ONLY_LEFT_OUT.
UNUSED_SETTINGS = {"gradient": ("model.n_init", "model.equal_weights", "model.missing"),
                   "variational": ("model.equal_weights", "model.missing", "progress_every",
                                   "stop.seconds"),
                   "meanshift": ("seed", "progress_every")}
ONLY_LEFT_OUT = ("seed", "progress_every")  # harmless when set: not refused


def data_label(cfg) -> str:
    """``data.name``, else a file's stem, separated data's dimension and separation
    (``separated-d10-c0.5``), else the source's name (``faithful``...)."""
    if cfg.data.name:
        return str(cfg.data.name)
    if cfg.data.source == DataSource.file and cfg.data.path:
        return Path(str(cfg.data.path)).stem
    if cfg.data.source == DataSource.separated:
        return f"separated-d{cfg.data.n_features}-c{cfg.data.separation:g}"
    return plain(cfg.data.source)


def precision_of(cfg) -> str:
    """The run's precision: ``precision``, else JAX's current setting."""
    import jax

    if cfg.get("precision") is not None:
        return plain(cfg.precision)
    return "float64" if jax.config.jax_enable_x64 else "float32"


def optimizer_config(cfg, name: str):
    """The settings of optimiser ``name``: the ``optimizer`` group's when it is the one
    selected (command-line overrides included), else its preset
    ``conf/optimizer/<name>.yaml``, else the schema's defaults (any optax optimiser)."""
    if cfg.optimizer.name == name:
        return cfg.optimizer
    path = CONF / "optimizer" / f"{name}.yaml"
    preset = OmegaConf.load(path) if path.is_file() else OmegaConf.create({"name": name})
    preset.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(OptimizerConfig), preset)


def method_config(cfg, method: str):
    """The config of one method of a comparison, as a run of its own would have it:
    ``algorithm`` and ``optimizer`` are the method's, ``compare`` is ``[method]``."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.compare = [method]
        if method in EM_METHODS:
            out.algorithm = OmegaConf.structured(
                EMConfig(acceleration=None if method == "em" else Acceleration(method)))
        else:
            if cfg.algorithm.name != "gradient":
                out.algorithm = OmegaConf.structured(GradientConfig)
            out.optimizer = optimizer_config(cfg, method)
    return out


def kind_of(cfg, method: str) -> str:
    """"compare", "em" (EM and accelerated EM), "gradient", "meanshift" or "variational"."""
    if method in EM_METHODS:
        return "em"
    return method if method in ("compare", "meanshift", "variational") else "gradient"


def stop_rule(stop) -> str:
    """The stopping rule in words (every run logs it; charts and descriptions state it)."""
    budget = f"at most {stop.max_iter} iterations (EM) or steps (gradient)"
    if stop.seconds is not None:
        return (f"every method runs for {stop.seconds:g} s of warm compute (its iterations or "
                f"steps in that time, {budget})")
    if stop.tol == 0:
        return f"every method runs exactly {stop.max_iter} iterations (EM) or steps (gradient)"
    gains = "a gain" if stop.patience == 1 else f"{stop.patience} consecutive gains"
    return (f"every method stops after {gains} in mean log-likelihood below {stop.tol:g} "
            f"nats per sample, or after {budget}")


def run_params(cfg, method: str) -> dict:
    """The settings a run of ``method`` ("compare", "em", an optimiser, "meanshift")
    actually uses, resolved, as a nested dict: the data set's own settings only, no
    group the run does not read; plus ``method`` and, for fits, ``stop_rule``."""
    out = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    kind = kind_of(cfg, method)
    for key in UNUSED[kind]:
        out.pop(key, None)
    for key in UNUSED_SETTINGS.get(kind, ()):
        *parents, last = key.split(".")
        node = out
        for parent in parents:
            node = node.get(parent, {})
        node.pop(last, None)
    data = out["data"]
    keep = ("source", "name", "standardize", "column_names", *DATA_FIELDS[data["source"]])
    out["data"] = {key: data[key] for key in keep}
    out["data"]["name"] = data_label(cfg)
    out["precision"] = precision_of(cfg)
    out.pop("compilation_cache", None)  # where programs are cached: no part of the result
    out["method"] = method
    if kind != "meanshift":
        out["stop_rule"] = stop_rule(cfg.stop)
    return out


# ------------------------------------------------------------------ sweeps


def sweep_overrides(config) -> dict[str, str]:
    """What the sweep sets: the command line's overrides and the preset's
    ``hydra.sweeper.params`` (the command line wins), as ``{key: value}``."""
    params = config.hydra.sweeper.get("params")
    out = {str(k): str(v) for k, v in (OmegaConf.to_container(params) if params else {}).items()}
    for item in config.hydra.overrides.task:
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


def swept_keys(overrides: dict[str, str]) -> list[str]:
    """The keys of ``overrides`` that take several values (``a,b``, ``range(...)``,
    ``choice(...)``; a list value such as ``[em,adam]`` is one value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for key, value in overrides.items():
        try:
            override = parser.parse_override(f"{key}={value}")
        except Exception:  # noqa: BLE001 (Hydra's own error comes with the jobs)
            continue
        if override.is_sweep_override():
            out.append(key)
    return out
