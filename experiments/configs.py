"""Structured configs: the schema Hydra checks every run's config against.

Registered in Hydra's ConfigStore; the YAML files under ``conf/`` fill them in. A
misspelt key or a value of the wrong type or outside an enum stops the run with
Hydra's message before any data is loaded; names checked by the library (init
method, optimiser) are checked by ``validate`` before any data is loaded either.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mogjax.init import canonical_init


class CovarianceType(str, Enum):
    full = "full"
    tied = "tied"
    diag = "diag"
    spherical = "spherical"
    identity = "identity"


class DataName(str, Enum):
    faithful = "faithful"
    iris = "iris"
    synthetic = "synthetic"
    file = "file"


@dataclass
class DataConfig:
    name: DataName = DataName.faithful
    path: Optional[str] = None  # for name=file: a .csv or .npy
    columns: Optional[int] = None  # for name=file: the number of columns it must have
    n_samples: int = 1000  # synthetic only
    n_components: int = 3
    n_features: int = 2
    separation: float = 5.0
    seed: int = 0
    standardize: bool = False  # scale every feature to unit variance


@dataclass
class ModelConfig:
    k: int = 2
    covariance_type: CovarianceType = CovarianceType.full
    reg_covar: float = 1e-6
    init: str = "kmeans++"
    n_init: int = 1
    equal_weights: bool = False


@dataclass
class EMConfig:
    name: str = "em"
    max_iter: int = 100
    tol: float = 1e-3


@dataclass
class GradientConfig:
    name: str = "gradient"
    steps: int = 500
    tol: Optional[float] = None
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


@dataclass
class OptimizerConfig:
    name: str = "adam"
    learning_rate: Optional[float] = 0.05  # None: the library's default (lbfgs: line search)
    schedule: str = "constant"
    clip_norm: Optional[float] = None
    options: dict[str, Any] = field(default_factory=dict)  # e.g. momentum for sgd


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    experiment_name: str = "mogjax"
    run_name: Optional[str] = None
    summary_param: Optional[str] = None  # multirun: plot a metric against this param
    summary_metric: str = "bic"
    log_plots: bool = True  # the curve and cluster plots of every run (off: faster sweeps)
    fallback_dir: str = "mlflow-fallback"  # where a run's results go if the store fails


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
    compare: list[str] = field(default_factory=lambda: ["em", "adam"])
    tags: list[str] = field(default_factory=list)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="algorithm", name="em_schema", node=EMConfig)
    cs.store(group="algorithm", name="gradient_schema", node=GradientConfig)
    cs.store(group="algorithm", name="meanshift_schema", node=MeanShiftConfig)
    cs.store(group="optimizer", name="schema", node=OptimizerConfig)
    cs.store(group="tracking", name="schema", node=TrackingConfig)


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "lbfgs")


def validate(cfg) -> None:
    """Checks the schema cannot express; raises ValueError before any data is loaded."""
    canonical_init(cfg.model.init)
    if cfg.model.k < 1:
        raise ValueError(f"model.k must be >= 1, got {cfg.model.k}")
    if cfg.optimizer.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name {cfg.optimizer.name!r} is not one of {OPTIMIZERS}")
    if cfg.data.name == DataName.file and not cfg.data.path:
        raise ValueError("data=file needs data.path=PATH (a .csv or .npy file)")
    if cfg.n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {cfg.n_seeds}")
    if cfg.n_seeds > 1 and cfg.algorithm.name != "em":
        raise ValueError(f"n_seeds={cfg.n_seeds} batches EM fits; algorithm "
                         f"{cfg.algorithm.name!r} runs one seed per job (use -m seed=...)")
    for method in cfg.compare:
        if method not in ("em",) + OPTIMIZERS:
            raise ValueError(f"compare entry {method!r} is not 'em' or an optimizer {OPTIMIZERS}")
