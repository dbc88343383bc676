"""``user_config`` of the FAQ deployment: changing it in the config reaches running replicas without a restart."""

from pydantic import BaseModel, ConfigDict, Field


class FaqUserConfig(BaseModel):
    """``user_config`` of the FAQMatcher deployment: the model to swap in on running replicas.

    Batching of FAQ requests is the ingress's (the app's ``faq_call_grouping`` args), not the deployment's.
    """

    model_config = ConfigDict(extra="forbid")

    model_uri: str | None = Field(
        None,
        description="Hot model update: a directory from `serve-app faq train` (path or fsspec URL) that running "
        "replicas load, verify and swap in without a restart. A model that fails verification is refused and "
        "the previous one keeps serving (/readyz names why). Unset: the model of `faq_model_uri`.",
    )
