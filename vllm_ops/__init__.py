"""vllm-ops: get vLLM serving right the first time (probe → plan → render → launch → validate → bench)."""

__version__ = "0.1.0"
