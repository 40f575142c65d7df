"""The folders README's "Anatomy of a fine-tune" example reads: a tiny Llama and two LoRAs merged into it by PEFT.

Usage: python scripts/make_anatomy_example.py OUT  (needs torch, transformers and peft: the test extra)
writes OUT/base, OUT/lora (rank 8 on q_proj and v_proj) and OUT/lora2 (another seed), each a transformers folder;
lora_B is scaled to make a change of about 8% (a trained adapter's stand-in).
"""

from __future__ import annotations

import sys
from pathlib import Path

import peft
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=4,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def main(out: Path) -> None:
    tiny_llama().save_pretrained(out / "base")
    for name, seed in (("lora", 1), ("lora2", 2)):
        model = tiny_llama()
        torch.manual_seed(seed)
        config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        tuned = peft.get_peft_model(model, config)
        with torch.no_grad():  # lora_B random, not PEFT's zeros: a trained adapter's stand-in, of a modest size
            for parameter_name, parameter in tuned.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.mul_(0.02)
        tuned.merge_and_unload().save_pretrained(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
