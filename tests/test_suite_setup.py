"""The test suite's own machinery: `make test` runs `pytest -n 2 --dist loadgroup`, and the modules whose
module fixtures train or build models mark their tests with one `xdist_group`, so one worker builds each
fixture. pytest 9 ignores how pytest-xdist 3.8 tags a test with its group (requirements.txt pins <9)."""
from __future__ import annotations

import pytest


@pytest.mark.xdist_group("suite_setup_probe")
def test_xdist_group_reaches_the_scheduler(request):
    """Under `--dist loadgroup` a grouped test's id carries its group (what the scheduler groups by);
    run without xdist there is no scheduler to reach, and the id stays plain."""
    grouped = request.node.nodeid.endswith("@suite_setup_probe")
    assert grouped == bool(getattr(request.config.option, "loadgroup", False)), request.node.nodeid
