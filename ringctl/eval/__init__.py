"""Evaluation: benchmarks (presets, field mappings, stage data) -> n samples per problem from each checkpoint ->
verifier scores -> pass@1 / pass@k / maj@n / IFEval levels, shared by the evaluate stage and `ringctl eval`.

    benchmarks.py   BenchmarkSpec (recipe / CLI), presets, loading and input checks (exit 2 before generation)
    sampling.py     a checkpoint in a rollout engine (HF generate or vLLM), seeded per (problem, sample), scored
    metrics.py      the estimators
    report.py       report.json rows, the benchmarks x checkpoints table (terminal, markdown), the plot
    run.py          evaluate(checkpoints, benchmarks, ...): the loop both callers use
"""
