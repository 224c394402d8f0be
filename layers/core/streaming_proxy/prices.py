"""The price table (`PRICES`): USD per million tokens, per provider and model, for the
estimated cost each stream reports. Settings only, no built-in prices: a stale table would
report wrong costs with confidence, so a model without a price reports no cost at all."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# A provider's entry under this name prices every model the provider has no entry for.
ANY_MODEL = "*"
# The dearest price a table may hold (USD per million tokens): far above any model's, and
# low enough that a stream's cost stays a finite number (an infinite one is not JSON, and
# CloudWatch would drop the stream's whole EMF record).
MAX_PRICE = 1_000_000


class ModelPrice(BaseModel):
    """What one model costs, in USD per million prompt (`input`) and completion (`output`)
    tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, le=MAX_PRICE)
    output: float = Field(ge=0, le=MAX_PRICE)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for these counts, rounded to a millionth of a cent."""
        usd = (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000
        return round(usd, 8)


# {"openai": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}, "ollama": {"*": ...}}
PriceTable = dict[str, dict[str, ModelPrice]]


def price_of(prices: PriceTable, provider: str, model: str | None) -> ModelPrice | None:
    """The model's price: its own entry, else its provider's `*` entry, else None."""
    models = prices.get(provider)
    if not models:
        return None
    if model is not None and model in models:
        return models[model]
    return models.get(ANY_MODEL)
