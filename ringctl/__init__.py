"""ringctl: a declarative orchestrator for LLM post-training pipelines (Ring-lite recipe)."""

__version__ = "0.1.0"
