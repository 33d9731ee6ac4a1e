"""Evaluation tasks: one module per task (gen_qa, the judges, Nova's benchmarks), each a
:class:`nova_eval_assets.tasks.base.Task`; shared helpers of several tasks beside them."""
