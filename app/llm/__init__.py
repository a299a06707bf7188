"""The LLM client: OpenAI-compatible endpoints per role, retries, limits, cost and a cache."""

from app.llm.client import ChatRequest, ChatResult, LLMCallFailed, LLMClient, LLMPool
from app.llm.endpoints import Endpoint, resolve_endpoint

__all__ = ["ChatRequest", "ChatResult", "Endpoint", "LLMCallFailed", "LLMClient", "LLMPool", "resolve_endpoint"]
