import os
import tempfile

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# CLI calls in tests use a persistent compile cache of their own (one per test session),
# never the user's cache folder.
os.environ.setdefault("OVERPARAM_COMPILE_CACHE", tempfile.mkdtemp(prefix="overparam-test-jax-cache-"))

from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
