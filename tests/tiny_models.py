"""Tiny transformers models, random from a seed, for the tests of model folders (made, saved, loaded back)."""

from __future__ import annotations

from typing import Any


def tiny_llama(tied: bool, *, width: int = 32, seed: int = 0) -> Any:
    """A two-layer ``LlamaForCausalLM`` ``width`` wide (a vocabulary of 4x, an MLP of 2x, a head per 8, a key/value
    head per 16), its embeddings tied to its head or not, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=4 * width,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=width // 8,
        num_key_value_heads=width // 16,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(*, tied: bool = True, positions: int = 32, seed: int = 0) -> Any:
    """A two-layer ``GPT2LMHeadModel`` 16 wide, of a vocabulary of 64, in eval mode (tied, by its class's default)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=positions, tie_word_embeddings=tied)
    return GPT2LMHeadModel(config).eval()
