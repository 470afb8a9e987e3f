"""The suite's own scheduling (tests/conftest.py): the xdist groups reach xdist's scheduler and name
tests that exist."""
from __future__ import annotations

import os
import re

import pytest
from conftest import GROUPS, REPO, group_of, pytest_xdist_make_scheduler


def test_every_group_prefix_names_an_existing_module_or_test():
    for prefix in GROUPS:
        path, _, name = prefix.partition("::")
        with open(os.path.join(REPO, path)) as f:
            assert not name or re.search(rf"^def {re.escape(name)}\(", f.read(), re.M), prefix


def test_group_of_matches_whole_module_and_test_names():
    assert group_of("tests/models/test_kuda.py::test_stage2_shapes") == "test_kuda"
    assert group_of("tests/models/test_models.py::test_output_shapes_and_finite[kuda]") == "test_models"
    assert group_of("tests/models/test_kuda_stages.py::test_both_stages_end_to_end") is None  # another module
    assert group_of("tests/training/test_train_e2e.py::test_mvcl_daf_beats_text_only") == "text_only_baseline"
    assert group_of("tests/training/test_train_e2e.py::test_dyken_hyena_beats_text_only") is None


def test_the_scheduler_groups_under_loadgroup_only():
    pytest.importorskip("xdist")

    class Config:
        def __init__(self, dist):
            self.dist = dist
            self.option = type("Option", (), {"tx": ["popen"] * 2, "numprocesses": 2, "dist": dist,
                                              "loadscopereorder": True})()

        def getvalue(self, name):
            return getattr(self.option, name)

        def getoption(self, name, default=None):
            return getattr(self.option, name, default)

    assert pytest_xdist_make_scheduler(Config("load"), None) is None
    sched = pytest_xdist_make_scheduler(Config("loadgroup"), None)
    assert sched._split_scope("tests/models/test_kuda.py::test_stage2_shapes") == "test_kuda"
    assert sched._split_scope("tests/test_metrics.py::test_f1") == "tests/test_metrics.py::test_f1"
