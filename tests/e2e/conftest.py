"""The whole chain: the LLM pipeline's fixtures (fake OpenAI-compatible server, a live service
with its worker) reused for tests that go from judging through review to export."""

from tests.app.llm.conftest import api, db_url, fake, forge_server, forge_settings, sql  # noqa: F401
from tests.app.ui import browser  # noqa: F401
