"""The model zoo: models from several sources, written the ways their libraries and research code write them.

Each Variant builds a model at a width (and depth), says how a user would parametrize it, and what hptransfer
must do with it: get it right (measured by tests/zoo_measure.py against a real base) or refuse it with an
HptError that names the true cause. Nothing here is from hptransfer's own model code except the reference
layouts of hptransfer.models (torchvision's ResNets, timm's ViT), which exist because neither library imports
next to a CPU build of torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import hptransfer as hpt
from hptransfer.models import BasicBlock, Bottleneck, StandardResNet, VisionTransformer
from hptransfer.models.resnet import branch_glob

VOCAB = 96
BASE, WIDTH = 32, 128  # m = 4: a sqrt(width) constant shows as a factor 2
HEADS = 4


@dataclass
class Variant:
    """One zoo member.

    Attributes:
        build: (width, depth) -> a fresh model. depth: the model's depth (blocks); base_depth: the base's.
        inputs: a batch for the model (and its base).
        kwargs: what a user passes to parametrize (branches, scheme, ...).
        refused: None if hptransfer must get it right, else (error type, regex the message must match).
        readouts: globs of the layers that map width to a fixed size (their logits shrink like m^-1/2 at init).
        impls: attention implementations to measure (transformers' config names); empty for others.
        meta_base: pass the base on the meta device (the common path) instead of a real one.
    """

    name: str
    source: str
    build: Callable[[int, int], nn.Module]
    inputs: Callable[[], Any]
    readouts: tuple[str, ...]
    depth: int = 2
    base_depth: int = 2
    kwargs: dict = field(default_factory=dict)
    refused: tuple[type, str] | None = None
    impls: tuple[str, ...] = ()
    meta_base: bool = True
    tags: tuple[str, ...] = ()


def tokens(batch: int = 4, seq: int = 16) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))


def seq2seq() -> dict[str, torch.Tensor]:
    return {"input_ids": tokens(), "decoder_input_ids": tokens(seq=12)}


def images(channels: int = 3, size: int = 16, batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


# ---- transformers -------------------------------------------------------------------------------------------
def hf(config_name: str, model_name: str, **fixed: Any) -> Callable[[int, int], nn.Module]:
    def build(width: int, depth: int) -> nn.Module:
        import transformers

        options = {key: value(width) if callable(value) else value for key, value in fixed.items()}
        config = getattr(transformers, config_name)(vocab_size=VOCAB, **options)
        if "num_hidden_layers" in config.to_dict():
            config.num_hidden_layers = depth
        return getattr(transformers, model_name)(config)

    return build


def llama_like(**extra: Any) -> dict[str, Any]:
    return dict(hidden_size=lambda w: w, intermediate_size=lambda w: 2 * w, num_attention_heads=HEADS,
                num_key_value_heads=2, head_dim=lambda w: w // HEADS, max_position_embeddings=64,
                attn_implementation="sdpa", **extra)


def t5(width: int, depth: int) -> nn.Module:
    import transformers

    config = transformers.T5Config(vocab_size=VOCAB, d_model=width, d_ff=2 * width, d_kv=width // HEADS,
                                   num_heads=HEADS, num_layers=depth, dropout_rate=0.0, attn_implementation="sdpa")
    return transformers.T5ForConditionalGeneration(config)


def bart(width: int, depth: int) -> nn.Module:
    import transformers

    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=width, encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width,
        encoder_layers=depth, decoder_layers=depth, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
        max_position_embeddings=64, scale_embedding=True, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, attn_implementation="sdpa")
    return transformers.BartForConditionalGeneration(config)


def opt(width: int, depth: int) -> nn.Module:
    import transformers

    config = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=width, ffn_dim=2 * width, num_hidden_layers=depth,
                                    num_attention_heads=HEADS, word_embed_proj_dim=width, max_position_embeddings=64,
                                    dropout=0.0, attention_dropout=0.0, attn_implementation="sdpa")
    return transformers.OPTForCausalLM(config)


def neox(width: int, depth: int) -> nn.Module:
    import transformers

    config = transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=depth, num_attention_heads=HEADS,
                                        max_position_embeddings=64, attn_implementation="sdpa")
    return transformers.GPTNeoXForCausalLM(config)


# ---- x-transformers -----------------------------------------------------------------------------------------
def xtransformer(flash: bool, rotary: bool = True) -> Callable[[int, int], nn.Module]:
    """x-transformers' decoder; with rotary positions (its absolute position embedding is multiplied by
    dim^-1/2 in the forward, a width-dependent constant the safety net refuses)."""
    def build(width: int, depth: int) -> nn.Module:
        from x_transformers import Decoder, TransformerWrapper

        return TransformerWrapper(num_tokens=VOCAB, max_seq_len=32, use_abs_pos_emb=not rotary, attn_layers=Decoder(
            dim=width, depth=depth, heads=HEADS, attn_dim_head=width // HEADS, attn_flash=flash,
            rotary_pos_emb=rotary))

    return build


# ---- research code ------------------------------------------------------------------------------------------
class RawAttention(nn.Module):
    """Weights as bare (d_in, d_out) Parameters used as x @ W, heads by einsum, a learned-free scale attribute."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.w_qkv = nn.Parameter(torch.randn(width, 3 * width) / math.sqrt(width))
        self.w_out = nn.Parameter(torch.randn(width, width) / math.sqrt(width))
        self.scale = (width // heads) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = (x @ self.w_qkv).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, seq, self.heads, -1) for t in (q, k, v))
        logits = torch.einsum("bqhd,bkhd->bhqk", q, k) * self.scale
        mask = torch.ones(seq, seq, dtype=torch.bool).tril()
        weights = logits.masked_fill(~mask, float("-inf")).softmax(-1)
        out = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, seq, width)
        return out @ self.w_out


class RawBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = RawAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.w_up = nn.Parameter(torch.randn(width, 4 * width) / math.sqrt(width))
        self.w_down = nn.Parameter(torch.randn(4 * width, width) / math.sqrt(4 * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + F.gelu(self.norm2(x) @ self.w_up) @ self.w_down


class RawLM(nn.Module):
    """A language model as research code writes it: bare Parameters in (d_in, d_out) layout used as x @ W,
    einsum attention; the readout a bare (d, vocab) Parameter too, applied in the root's forward."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Parameter(torch.randn(VOCAB, width))
        self.blocks = nn.ModuleList(RawBlock(width, HEADS) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = F.embedding(ids, self.embed)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class SdpaBlock(nn.Module):
    """Pre-norm block whose attention passes a constant scale to SDPA (a query_pre_attn_scalar convention)."""

    def __init__(self, width: int, heads: int, scale: float | None) -> None:
        super().__init__()
        self.heads, self.fixed_scale = heads, scale
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(width, -1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.fixed_scale)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, seq, width))
        return x + self.mlp(self.ln2(x))


class SdpaLM(nn.Module):
    """GPT with SDPA; ``scale`` a constant passed to every call (None: SDPA's 1/sqrt(d)); ``embed_scale``
    multiplies the embeddings by sqrt(width) as Gemma-style code does; ``tied``: the head is x @ wte.weight.T
    written in the forward; ``literal``: nanoGPT's manual attention with the scale written out."""

    def __init__(self, width: int, depth: int, scale: float | None = None, embed_scale: bool = False,
                 tied: bool = False) -> None:
        super().__init__()
        self.width, self.embed_scale, self.tied = width, embed_scale, tied
        self.wte = nn.Embedding(VOCAB, width)
        self.wpe = nn.Embedding(32, width)
        self.blocks = nn.ModuleList(SdpaBlock(width, HEADS, scale) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = None if tied else nn.Linear(width, VOCAB, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids)
        if self.embed_scale:
            x = x * math.sqrt(self.width)
        x = x + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.wte.weight.T if self.tied else self.lm_head(x)


def literal_forward(self: SdpaBlock, x: torch.Tensor) -> torch.Tensor:
    """nanoGPT's manual attention path: the scale written out in the forward, kept nowhere."""
    batch, seq, width = x.shape
    q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(width, -1))
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(~torch.ones(seq, seq, dtype=torch.bool).tril(), float("-inf")).softmax(dim=-1)
    x = x + self.proj((att @ v).transpose(1, 2).reshape(batch, seq, width))
    return x + self.mlp(self.ln2(x))


def nanogpt_manual(width: int, depth: int) -> nn.Module:
    model = SdpaLM(width, depth)
    for block in model.blocks:
        block.forward = literal_forward.__get__(block)
    return model


class StackedExperts(nn.Module):
    """An MoE layer as research code writes it: experts stacked as (E, d_in, d_out), applied by einsum to every
    token (dense routing, softmax gate)."""

    def __init__(self, width: int, experts: int = 4) -> None:
        super().__init__()
        self.router = nn.Linear(width, experts, bias=False)
        self.w_in = nn.Parameter(torch.randn(experts, width, 2 * width) / math.sqrt(width))
        self.w_out = nn.Parameter(torch.randn(experts, 2 * width, width) / math.sqrt(2 * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.router(x).softmax(-1)  # (b, t, e)
        hidden = F.gelu(torch.einsum("btd,edh->bteh", x, self.w_in))
        out = torch.einsum("bteh,ehd->bted", hidden, self.w_out)
        return torch.einsum("bted,bte->btd", out, gates)


class MoELM(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, width)
        self.blocks = nn.ModuleList(nn.ModuleDict({"ln1": nn.LayerNorm(width), "attn": SdpaBlock(width, HEADS, None),
                                                   "ln2": nn.LayerNorm(width), "moe": StackedExperts(width)})
                                    for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids)
        for block in self.blocks:
            x = block["attn"](x)
            x = x + block["moe"](block["ln2"](x))
        return self.lm_head(self.ln_f(x))


# ---- the zoo ------------------------------------------------------------------------------------------------
LM_HEAD = ("lm_head",)
ZOO: list[Variant] = [
    Variant("gpt2", "transformers", hf("GPT2Config", "GPT2LMHeadModel", n_embd=lambda w: w, n_head=HEADS,
                                       n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                       n_layer=2, attn_implementation="sdpa"),
            tokens, LM_HEAD, impls=("sdpa", "eager")),
    Variant("llama", "transformers", hf("LlamaConfig", "LlamaForCausalLM", **llama_like()), tokens, LM_HEAD,
            impls=("sdpa", "eager")),
    Variant("gpt_neox (head dim named head_size)", "transformers", neox, tokens, LM_HEAD, impls=("sdpa", "eager"),
            tags=("case2", "case10")),
    Variant("gemma (sqrt(d) embedding normalizer)", "transformers",
            hf("GemmaConfig", "GemmaForCausalLM", **llama_like()), tokens, LM_HEAD, impls=("sdpa", "eager"),
            tags=("case4", "case6")),
    Variant("gemma2 (query_pre_attn_scalar, softcaps)", "transformers",
            hf("Gemma2Config", "Gemma2ForCausalLM", **{**llama_like(), "attn_implementation": "eager"}),
            tokens, LM_HEAD, impls=("eager",)),
    Variant("gemma3 text (query_pre_attn_scalar, qk-norm)", "transformers",
            hf("Gemma3TextConfig", "Gemma3ForCausalLM", **llama_like()), tokens, LM_HEAD,
            impls=("sdpa", "eager"), tags=("case3",)),
    Variant("granite (attention_multiplier, mu-P style constants)", "transformers",
            hf("GraniteConfig", "GraniteForCausalLM", **llama_like(attention_multiplier=1 / 64)), tokens,
            LM_HEAD, impls=("sdpa", "eager")),
    Variant("mixtral (MoE: fused experts, router)", "transformers",
            hf("MixtralConfig", "MixtralForCausalLM", **llama_like(num_local_experts=4)), tokens,
            ("lm_head", "*.mlp.gate"), impls=("sdpa",), tags=("case9",)),
    Variant("qwen3 MoE (experts, router, qk-norm)", "transformers",
            hf("Qwen3MoeConfig", "Qwen3MoeForCausalLM", **llama_like(
                num_experts=4, num_experts_per_tok=2, moe_intermediate_size=lambda w: w, norm_topk_prob=True)),
            tokens, ("lm_head", "*.mlp.gate"), impls=("sdpa",)),
    Variant("opt (learned positions, an Embedding subclass)", "transformers", opt, tokens, LM_HEAD,
            impls=("sdpa", "eager"), tags=("case6",)),
    Variant("t5 (encoder-decoder, relative bias, tied head)", "transformers", t5, seq2seq, LM_HEAD,
            impls=("sdpa", "eager"), tags=("case4", "case5", "case11")),
    Variant("bart (encoder-decoder, scale_embedding)", "transformers", bart, seq2seq, LM_HEAD,
            impls=("sdpa", "eager")),
    Variant("x-transformers decoder, flash", "x-transformers", xtransformer(True), tokens, ("to_logits",),
            meta_base=False),
    Variant("x-transformers decoder, einsum attention", "x-transformers", xtransformer(False), tokens,
            ("to_logits",), meta_base=False),
    Variant("x-transformers decoder, meta base", "x-transformers", xtransformer(True), tokens, ("to_logits",),
            refused=(hpt.InitError, r"custom init \(token_emb\.emb\.weight\).*Pass a real base")),
    Variant("x-transformers decoder, absolute positions x dim^-1/2", "x-transformers",
            xtransformer(True, rotary=False), tokens, ("to_logits",), meta_base=False,
            refused=(hpt.CheckError, r"pos_emb: output rms x0\.(4[89]|5[01])\d* the base's, width exponent -0\.(49|5)")),
    Variant("ResNet BasicBlock, widened", "torchvision-style",
            lambda w, d: StandardResNet(BasicBlock, blocks=d, width=2 * w // BASE), images, ("fc",), depth=1,
            base_depth=1, meta_base=False),
    Variant("ResNet BasicBlock, widened and deepened", "torchvision-style",
            lambda w, d: StandardResNet(BasicBlock, blocks=d, width=2 * w // BASE), images, ("fc",), depth=2,
            base_depth=1, meta_base=False, tags=("case1",)),
    Variant("ResNet Bottleneck, widened and deepened", "torchvision-style",
            lambda w, d: StandardResNet(Bottleneck, blocks=d, width=2 * w // BASE), images, ("fc",), depth=2,
            base_depth=1, meta_base=False),
    Variant("ResNet BasicBlock, deepened (depth-muP)", "torchvision-style",
            lambda w, d: StandardResNet(BasicBlock, blocks=d, width=2 * w // BASE), images, ("fc",), depth=4,
            base_depth=1, kwargs={"scheme": "depth_mup", "branches": branch_glob(BasicBlock)}, tags=("case7",)),
    Variant("ViT, fused attention (SDPA)", "timm-style",
            lambda w, d: VisionTransformer(dim=w, depth=d, heads=HEADS), images, ("head",), tags=("case8",)),
    Variant("ViT, q * self.scale attention", "timm-style",
            lambda w, d: VisionTransformer(dim=w, depth=d, heads=HEADS, fused_attn=False), images, ("head",)),
    Variant("raw (d_in, d_out) Parameters, x @ W, einsum attention", "research code",
            lambda w, d: RawLM(w, d), tokens, ("head",), meta_base=False),
    Variant("SDPA with a constant scale", "research code", lambda w, d: SdpaLM(w, d, scale=0.125), tokens,
            LM_HEAD, tags=("case3",)),
    Variant("stacked experts (E, d_in, d_out) by einsum", "research code", lambda w, d: MoELM(w, d), tokens,
            ("lm_head", "*.router"), meta_base=False),
    Variant("embedding times sqrt(d_model) in the forward", "research code",
            lambda w, d: SdpaLM(w, d, embed_scale=True), tokens, LM_HEAD, tags=("case4",),
            refused=(hpt.CheckError, r"blocks\.0: input rms x(1\.9\d*|2|2\.0\d*) the base's, width exponent \+0\.(49|5)")),
    Variant("nanoGPT manual attention, literal scale", "research code", nanogpt_manual, tokens, LM_HEAD,
            refused=(hpt.AttentionError, r"blocks\.0.*hand-written.*no attribute of its module sets it")),
    Variant("tied head written as x @ wte.weight.T", "research code", lambda w, d: SdpaLM(w, d, tied=True),
            tokens, (), refused=(hpt.ReadoutError, r"wte\.weight is used as a readout.*root")),
]
