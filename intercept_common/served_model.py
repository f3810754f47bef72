"""`DEFAULT_SERVED_MODEL_NAME`: the one default name the engine serves the policy under (vLLM's
`--served-model-name`), used by the worker, the gate, the engine subprocess and the Space deployment alike."""

DEFAULT_SERVED_MODEL_NAME = "policy"
