"""rubric_llm_judge: Nova 2.0's rubric judge; per prompt the judge writes weighted
criteria, scores both responses on each, and gives its preference (judge/rubric.py)."""

from nova_eval_assets.tasks.base import PipelineTask

TASK = PipelineTask(
    name="rubric_llm_judge",
    strategy="judge",
    description="an LLM judge that writes and scores its own criteria, then compares pairwise",
)
