"""rft_eval: the model's answers scored by the user's reward function, the one RFT trains
with (Nova 2.0; rl_env.reward_lambda_arn, or rl_env.handler). The dataset is OpenAI's RFT
format (dataset.check_rft_row); the reward calls are byom/rewards.py's."""

from nova_eval_assets.tasks.base import PipelineTask

TASK = PipelineTask(
    name="rft_eval",
    strategy="rft_eval",
    description="answers scored by your reward function, as reinforcement fine-tuning does",
)
