# tests/ has no __init__.py, so pytest puts this folder on sys.path and the plain import works.
from hub_server import hub_endpoint  # noqa: F401  (re-exported fixture: the loopback test Hub)
