"""A key the configs lack is one ``error:`` line naming it and where it lives now
(``experiments/config_errors.py``)."""

import pytest
from hydra.errors import ConfigCompositionException

from experiments import config_errors


@pytest.mark.parametrize("override,start,end", [
    ("algorithm.max_iter=-5", "error: algorithm.max_iter is not a setting of algorithm=em "
                              "(its keys: name", "; max_iter is set as stop.max_iter"),
    ("algorithm.tol=1", "error: algorithm.tol is not a setting of algorithm=em (its keys: "
                        "name", "; tol is set as stop.tol"),
    ("model.kk=3", "error: model.kk is not a setting of model (its keys: k, "
                   "covariance_type, ", ")"),
])
def test_missing_key_is_one_line(cfg_factory, override, start, end):
    with pytest.raises(ConfigCompositionException) as err:
        cfg_factory(override)
    got = config_errors.one_line(err.value)
    assert got is not None and got.startswith(start) and got.endswith(end), got
    assert "\n" not in got


def test_moved_key_names_every_home():
    line = config_errors.message("algorithm.patience", config_errors.configs.MeanShiftConfig)
    assert line.startswith("algorithm.patience is not a setting of algorithm=meanshift")
    assert line.endswith("patience is set as stop.patience")


def test_other_composition_errors_are_left_to_hydra(cfg_factory):
    with pytest.raises(ConfigCompositionException) as err:
        cfg_factory("model.covariance_type=fulll")  # a bad value: Hydra's message lists the options
    assert config_errors.one_line(err.value) is None
