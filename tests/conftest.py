# tests/ has no __init__.py, so pytest puts this folder on sys.path and the plain import works.
import copy

import pytest
from hub_server import hub_endpoint  # noqa: F401  (re-exported fixture: the loopback test Hub)
from transformers.pipelines import PIPELINE_REGISTRY

from modeling_mer.configuration_mer import TASK
from modeling_mer.pipeline_mer import MERPipeline  # noqa: F401  (registers TASK with this checkout's class)

# This checkout's registration, taken before any test can load a saved folder's copy.
CHECKOUT_REGISTRATION = copy.copy(PIPELINE_REGISTRY.supported_tasks[TASK])


@pytest.fixture(autouse=True)
def restore_pipeline_registry():
    """A `trust_remote_code` load registers the saved folder's copy of MERPipeline under TASK for the rest of the
    process; put this checkout's registration back before and after every test, so test order cannot matter."""
    PIPELINE_REGISTRY.supported_tasks[TASK] = copy.copy(CHECKOUT_REGISTRATION)
    yield
    PIPELINE_REGISTRY.supported_tasks[TASK] = copy.copy(CHECKOUT_REGISTRATION)
