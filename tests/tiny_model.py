"""A tiny random-weight causal LM saved as a local Hugging Face folder, for engine tests
that need a model built to order (a thinking switch in its chat template, a short context).

The tokenizer is a real byte-level BPE (`tokenizers`), trained here on a few sentences,
with Qwen3's turn and thinking markers as added tokens; the model is a `Qwen3ForCausalLM`
of two layers and hidden size 32. Random weights write random text: tests check what the
engine does with it (prompts, budgets, columns), not what it says.
"""

from __future__ import annotations

from pathlib import Path

#: A Qwen3-style template: ChatML turns, and `enable_thinking` as Qwen3 reads it (thinking
#: unless it is false; false closes an empty <think> block in the generation prompt).
THINKING_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

#: The same turns without any switch: a model that cannot reason.
PLAIN_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]  # added, not special: decoded text keeps them (as Qwen3's)

CORPUS = [
    "What is the capital of France? Paris is the capital of France.",
    "Two plus two is four. The answer is 4.",
    "Think step by step before you answer the question.",
    "The printer on floor three is out of toner again.",
    "Reset the password and restart the laptop.",
] * 4


def build_tiny_model(
    folder: Path,
    chat_template: str = THINKING_TEMPLATE,
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> Path:
    """Write the tokenizer and a random Qwen3 model into `folder`; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text encodes
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_tokens(THINK)
    tokenizer.chat_template = chat_template
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    return folder
