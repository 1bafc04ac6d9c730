"""Build model folders (the real config.json from vllm-ops's model catalog + a tokenizer sized to
the config's vocabulary) for running real architectures with `--load-format dummy` on a GPU box
without downloading any weights (vLLM fills them with random values: shapes, memory and timings are
real, the text is not).

    python scripts/gpu_models.py OUT_DIR Qwen/Qwen2.5-7B-Instruct meta-llama/Llama-3.1-70B-Instruct

Model ids are the catalog's (`vllm-ops models list`). Needs the `tokenizers` package (installed
with vLLM).

The tokenizer: a small byte-level BPE trained on a few lines, its tokens placed on the ids the
config leaves free, the config's bos/eos ids given to special tokens, ChatML markers added, and
the remaining ids filled with unique filler tokens, so that len(tokenizer) == vocab_size.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0123456789 {}[]:,\"'-_.!?/\\",
    "def main():\n    return {\"name\": \"value\", \"count\": 42}\n",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
] * 50


def _ids(v) -> list[int]:
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [int(v)]


def catalog_config(model_id: str) -> dict:
    """The model's config.json as kept in vllm_ops/data/models/ (the repository's catalog)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vllm_ops.models import catalog

    entry = catalog.get_entry(model_id)
    if entry is None:
        sys.exit(f"gpu_models: {model_id} is not in the model catalog (vllm-ops models list)")
    return entry["config"]


def build(model_id: str, out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    cfg = catalog_config(model_id)
    text_cfg = cfg.get("text_config", cfg)
    # a key the config omits takes transformers' default (Gemma3TextConfig: vocab 262208, bos 2)
    vocab_size = int(text_cfg.get("vocab_size") or TEXT_DEFAULTS[text_cfg["model_type"]]["vocab_size"])
    text_cfg.setdefault("vocab_size", vocab_size)
    bos = _ids(text_cfg.get("bos_token_id", cfg.get("bos_token_id")))
    eos = _ids(text_cfg.get("eos_token_id", cfg.get("eos_token_id")))

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    base = json.loads(tok.to_str())
    bpe_vocab = sorted(base["model"]["vocab"].items(), key=lambda kv: kv[1])

    special: dict[int, str] = {}
    for i in bos:
        special[i] = "<|bos|>" if i not in eos else "<|endoftext|>"
    for n, i in enumerate(eos):
        special[i] = "<|im_end|>" if n == len(eos) - 1 else f"<|eos_{n}|>"
    free = [i for i in range(vocab_size) if i not in special]
    # ChatML start marker on the highest free id
    im_start = free.pop()
    special[im_start] = "<|im_start|>"
    if "<|im_end|>" not in special.values():
        im_end = free.pop()
        special[im_end] = "<|im_end|>"

    vocab: dict[str, int] = {}
    it = iter(free)
    for token, _ in bpe_vocab:
        vocab[token] = next(it)
    for n, i in enumerate(it):
        vocab[f"<filler_{n}>"] = i
    for i, s in special.items():
        vocab[s] = i
    base["model"]["vocab"] = vocab
    base["added_tokens"] = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, s in sorted(special.items())]

    d = out / model_id.replace("/", "__")
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    (d / "tokenizer.json").write_text(json.dumps(base))
    eos_tok = special[eos[-1]] if eos else "<|im_end|>"
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE,
        "eos_token": eos_tok, "bos_token": special[bos[0]] if bos else None,
        "pad_token": eos_tok, "model_max_length": int(text_cfg.get("max_position_embeddings", 4096)),
        "clean_up_tokenization_spaces": False}, indent=2))
    (d / "generation_config.json").write_text(json.dumps({
        "bos_token_id": bos[0] if bos else None, "eos_token_id": eos or None}, indent=2))
    if cfg.get("model_type") == "gemma3" and cfg.get("vision_config"):
        add_gemma3_processor(d, cfg)
    check = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert check.get_vocab_size(with_added_tokens=True) == vocab_size, (check.get_vocab_size(), vocab_size)
    return d


TEXT_DEFAULTS = {"gemma3_text": {"vocab_size": 262208}}


def _place_tokens(tj: dict, want: dict[int, str], special: bool = True) -> None:
    """Put tokens on fixed ids, displacing filler tokens (a BPE token moves to a filler's id)."""
    vocab = tj["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    fillers = (t for t in list(vocab) if t.startswith("<filler_"))
    for i, text in want.items():
        old = inv.get(i)
        if old is not None:
            vocab.pop(old)
            if not old.startswith("<filler_") and not old.startswith("<|"):
                vocab[old] = vocab.pop(next(fillers))
        vocab[text] = i
    tj["added_tokens"] = sorted([a for a in tj["added_tokens"] if a["id"] not in want] + [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": special} for i, t in want.items()], key=lambda a: a["id"])


def add_gemma3_processor(d: Path, cfg: dict) -> None:
    """What vLLM's gemma3_mm needs to build its dummy images: the image tokens on the config's ids,
    literal newline tokens ('\\n' .. four of them: vLLM 0.25 reads vocab['\\n'] .. vocab['\\n\\n\\n\\n'];
    without them it fails with KeyError: '\\n'), and Gemma3Processor / Gemma3ImageProcessor configs."""
    tj = json.loads((d / "tokenizer.json").read_text())
    _place_tokens(tj, {cfg["boi_token_index"]: "<start_of_image>", cfg["eoi_token_index"]: "<end_of_image>",
                       cfg["image_token_index"]: "<image_soft_token>", 105: "<start_of_turn>"})
    free = sorted(i for t, i in tj["model"]["vocab"].items() if t.startswith("<filler_"))[:4]
    _place_tokens(tj, {i: "\n" * (n + 1) for n, i in enumerate(free)}, special=False)
    (d / "tokenizer.json").write_text(json.dumps(tj))
    tc = json.loads((d / "tokenizer_config.json").read_text())
    image = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tc.update(image, processor_class="Gemma3Processor", extra_special_tokens=image)
    (d / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    seq = int(cfg.get("mm_tokens_per_image", 256))
    size = int(cfg["vision_config"].get("image_size", 896))
    (d / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "image_seq_length": seq, "resample": 2, "rescale_factor": 1 / 255, "size": {"height": size, "width": size}},
        indent=2))
    (d / "processor_config.json").write_text(json.dumps({"image_seq_length": seq, "processor_class": "Gemma3Processor"}))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python scripts/gpu_models.py OUT_DIR MODEL_ID [MODEL_ID ...]")
    out = Path(sys.argv[1])
    for m in sys.argv[2:]:
        print(build(m, out))
