"""llm_judge: an LLM judge compares two models' responses to each prompt (judge/)."""

from nova_eval_assets.tasks.base import PipelineTask

TASK = PipelineTask(
    name="llm_judge",
    strategy="judge",
    description="an LLM judge comparing two models' responses pairwise",
)
