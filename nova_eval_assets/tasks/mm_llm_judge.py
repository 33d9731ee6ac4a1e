"""mm_llm_judge: the LLM judge of prompts with images, shown to the judge (judge/)."""

from nova_eval_assets.tasks.base import PipelineTask

TASK = PipelineTask(
    name="mm_llm_judge",
    strategy="judge",
    description="the LLM judge of prompts with images",
)
