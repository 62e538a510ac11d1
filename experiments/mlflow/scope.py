"""What /mlflow does not serve, by family, in one sentence each: the answer to a call outside
the supported subset is MLflow's ENDPOINT_NOT_FOUND (404) naming the family, so a user learns
at the first call that it is a scope decision and not a fault (the README lists the same)."""

import re

# (pattern of the path after /mlflow/, what is not supported). The first match wins.
OUT_OF_SCOPE = [
    (r"graphql", "MLflow's GraphQL API is not supported by finetune_hub"),
    (
        r"(traces|spans)(/|$)|assessments",
        "Traces and assessments (MLflow tracing) are not supported by finetune_hub",
    ),
    (r"prompts?(/|-|$)|promptlab", "The prompt registry's own calls are not supported"),
    (r"scorers?(/|$)", "Scorers are not supported by finetune_hub"),
    (
        r"api/3\.0/mlflow/datasets",
        "GenAI evaluation datasets (api/3.0/mlflow/datasets) are not supported by finetune_hub",
    ),
    (r"gateway|secrets|endpoints|providers", "MLflow's AI gateway is not supported"),
    (r"issues(/|$)", "MLflow issues are not supported by finetune_hub"),
    (r"webhooks", "Webhooks are not supported by finetune_hub"),
    (r"workspaces", "MLflow workspaces are not supported: a finetune_hub team is one namespace"),
]
_COMPILED = [(re.compile(pattern), text) for pattern, text in OUT_OF_SCOPE]


def not_supported_message(rest: str) -> str:
    """The sentence for a path this server does not serve."""
    shown = rest[:100]
    for pattern, text in _COMPILED:
        if pattern.search(rest):
            return f"{text} (endpoint {shown})"
    return f"This MLflow endpoint is not supported by finetune_hub: {shown}"
