"""A tiny random-weight causal LM saved as a local Hugging Face folder, for engine tests
that need a model built to order (a thinking switch in its chat template, a short context).

The tokenizer is a real byte-level BPE (`tokenizers`), trained here on a few sentences,
with Qwen3's turn and thinking markers as added tokens; the model is a `Qwen3ForCausalLM`
of two layers and hidden size 32. Random weights write random text: tests check what the
engine does with it (prompts, budgets, columns), not what it says.

`build_tiny_vlm` writes a vision-language model the same way: a `LlavaForConditionalGeneration`
(a one-layer CLIP vision tower on 16x16 images in 8x8 patches, a projector and a two-layer
Qwen2 text model), a `LlavaProcessor` whose image processor is CLIP's (Pillow backend, no
torchvision) and whose tokenizer is the same BPE with an ``<image>`` token, and a ChatML
template that takes content parts. Nothing is downloaded.
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


def _bpe_tokenizer(special: list[str], **tokens: object):
    """The tiny byte-level BPE, trained on `CORPUS`, with `special` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text encodes
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        **tokens,
    )


def build_tiny_model(
    folder: Path,
    chat_template: str = THINKING_TEMPLATE,
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> Path:
    """Write the tokenizer and a random Qwen3 model into `folder`; return it."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = _bpe_tokenizer(SPECIAL)
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


IMAGE_TOKEN = "<image>"

#: ChatML turns whose content is a string or a list of parts: an image part is the image
#: token (the processor expands it to the image's patches), a text part its text.
VISION_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<image>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: The vision tower's input side and patch: 16x16 images, 4 patches (image tokens) each.
VLM_IMAGE_SIZE = 16
VLM_PATCH_SIZE = 8


def build_tiny_vlm(
    folder: Path,
    chat_template: str | None = VISION_TEMPLATE,
    max_position_embeddings: int = 256,
    seed: int = 0,
) -> Path:
    """Write a random LLaVA model and its processor into `folder`; return it."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = _bpe_tokenizer(
        [*SPECIAL, IMAGE_TOKEN], extra_special_tokens={"image_token": IMAGE_TOKEN}
    )
    side = VLM_IMAGE_SIZE
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=VLM_PATCH_SIZE,
        vision_feature_select_strategy="default",  # the CLS position is dropped
        num_additional_image_tokens=1,
        chat_template=chat_template,
        image_token=IMAGE_TOKEN,
    )
    folder.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(folder)

    vision_config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=side,
        patch_size=VLM_PATCH_SIZE,
        projection_dim=16,
    )
    text_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    return folder


def image_uri(width: int = 20, height: int = 12, seed: int = 0, fmt: str = "png") -> str:
    """A data URI of a small random RGB image."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt.upper())
    return f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode()}"
