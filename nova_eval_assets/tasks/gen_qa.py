"""gen_qa: the user's own dataset of prompts and reference answers (Nova's
bring-your-own-dataset recipe), validated by dataset.py and scored by metrics/gen_qa.py."""

from nova_eval_assets.tasks.base import PipelineTask

TASK = PipelineTask(
    name="gen_qa",
    strategy="gen_qa",
    description="your own prompts and reference answers, scored by Nova's gen_qa metrics",
)
