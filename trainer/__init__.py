"""Training: TRL 1.16's AsyncGRPOTrainer, unforked, fed by the rollout worker (`intercept-rl train`; design §4).

`train_swe_async_grpo` is the command; `config` its arguments (`modes` the choice-valued ones); `components` wires
the engine and the worker; `checkpoints` saves and restores the worker's state and the policy version;
`weight_transfer` / `vllm_weight_sync` push weights; `on_demand_batches` judges staleness when a batch is trained;
`off_policy` corrects for it; `cpu_compat` makes TRL run without CUDA; `progress`, `traces`, `rollout_records`
report; `inspect_page` is `intercept-rl inspect`. Every TRL name comes from
`intercept_common.trl_api` (design §4).
"""
