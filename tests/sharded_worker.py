"""Subprocess side of tests/test_sharded.py: sharded fits printed as one JSON line.

Run as ``python tests/sharded_worker.py CONFIG.json``; the config names the data
file (``.npz`` with ``x`` and optional ``weights``/``means``/``precisions``), the
fits to run and either ``"devices"`` mode (one process, every simulated device, set
by the caller's ``XLA_FLAGS``) or ``"process"`` mode (``jax.distributed`` with
``process_id`` among ``num_processes``, holding rows ``split[i]:split[i+1]``).
Importing this module does nothing (pytest's doctest collection imports it).
"""

import json
import sys


def _as_lists(result) -> dict:
    import numpy as np

    p = result.params
    return {
        "log_weights": np.asarray(p.log_weights).tolist(),
        "means": np.asarray(p.means).tolist(),
        "prec_chol": np.asarray(p.prec_chol).tolist(),
        "curve": np.asarray(result.curve).tolist(),
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
    }


def _sharding_checks(data) -> dict:
    """What shows that the rows really are split over the devices."""
    shards = data.x.addressable_shards
    return {
        "spec": list(data.x.sharding.spec),
        "n_devices": len(data.x.sharding.device_set),
        "addressable_shapes": [list(s.data.shape) for s in shards],
        "addressable_devices": sorted(s.device.id for s in shards),
        "shard_counts": list(data.layout.shard_counts),
    }


def _all_reduce_in_e_step(data, params, sharded) -> bool:
    """Whether the compiled sharded E-step adds the devices' statistics."""
    text = sharded._e_step_compiled.lower(
        params, data.x, layout=data.layout, block_size=None
    ).compile().as_text()
    return "all-reduce" in text


def main(config_path: str) -> None:
    with open(config_path) as f:
        cfg = json.load(f)
    import jax

    jax.config.update("jax_enable_x64", True)
    if cfg["mode"] == "process":
        jax.distributed.initialize(
            coordinator_address=cfg["coordinator"],
            num_processes=cfg["num_processes"],
            process_id=cfg["process_id"],
        )
    import numpy as np

    import mogjax as mg
    from mogjax import sharded

    arrays = np.load(cfg["data"])
    x = arrays["x"]
    if cfg["mode"] == "process":
        lo, hi = cfg["split"][cfg["process_id"]], cfg["split"][cfg["process_id"] + 1]
        x = x[lo:hi]
    given = {key: arrays[key] for key in ("weights", "means", "precisions") if key in arrays}
    data = sharded.shard_rows(x)
    out = {"devices": len(jax.devices()), "processes": jax.process_count(), "fits": []}
    for case in cfg["fits"]:
        kwargs = dict(case)
        if kwargs.pop("given", False):
            kwargs["init_params"] = given
        out["fits"].append(_as_lists(sharded.fit_em_sharded(data, **kwargs)))
    if cfg["mode"] == "devices":
        params = mg.initialize(
            jax.random.key(0), jax.numpy.asarray(arrays["x"]), 3, "full", **given
        )
        stats = sharded.e_step_sharded(params, data)
        one_step = mg.m_step(stats, 1e-6)
        out["step"] = {
            "means": np.asarray(one_step.means).tolist(),
            "prec_chol": np.asarray(one_step.prec_chol).tolist(),
            "log_likelihood": float(stats.log_likelihood),
        }
        out["sharding"] = _sharding_checks(data)
        out["sharding"]["all_reduce"] = _all_reduce_in_e_step(data, params, sharded)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
