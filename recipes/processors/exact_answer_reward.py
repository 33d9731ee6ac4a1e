"""A reward function for rft_eval (recipes/rft_sample.yaml): Nova's RFT contract, so the
same file deploys unchanged as the Lambda function of ``rl_env.reward_lambda_arn``.

It gets a list of samples (the conversation with the model's answer as the last message,
the line's ``reference_answer`` and an ``id``) and answers one entry per sample: the reward
is 1.0 when the answer's first word or number is the reference answer, 0.5 when the
reference appears anywhere in the answer, else 0.0; ``brevity`` (a Metric, not a Reward) is
1 / the answer's word count.
"""

import re

WORD = re.compile(r"[A-Za-z]+|-?\d+(?:\.\d+)?")


def reward(answer: str, expected: str) -> float:
    words = WORD.findall(answer.lower())
    if words and words[0] == expected:
        return 1.0
    return 0.5 if expected in words else 0.0


def lambda_handler(event, context):
    replies = []
    for sample in event:
        answer = sample["messages"][-1]["content"] or ""
        expected = str(sample["reference_answer"]["answer"]).lower()
        words = max(1, len(answer.split()))
        replies.append(
            {
                "id": sample["id"],
                "aggregate_reward_score": reward(answer, expected),
                "metrics_list": [
                    {
                        "name": "exact_first_word",
                        "value": float(reward(answer, expected) == 1.0),
                        "type": "Reward",
                    },
                    {"name": "brevity", "value": 1.0 / words, "type": "Metric"},
                ],
            }
        )
    return replies
