"""Generation backends. ``Rollout`` is what every backend returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    """Sampled responses, laid out for log-prob computation.

    Attributes:
        input_ids: (B, P + T) left-padded prompt followed by the response (padding after EOS).
        attention_mask: (B, P + T) 1 on real prompt and response tokens.
        response_mask: (B, T) 1 on response tokens up to and including EOS.
        prompt_len: P, the padded prompt width.
        truncated: (B,) bool, True where no EOS came before the length cap.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    truncated: torch.Tensor

    @property
    def response_ids(self) -> torch.Tensor:
        """(B, T)."""
        return self.input_ids[:, self.prompt_len :]

    def select(self, index: torch.Tensor) -> Rollout:
        """The rows ``index`` of this rollout."""
        return Rollout(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_mask[index],
            self.prompt_len,
            self.truncated[index],
        )

    def response_id_lists(self) -> list[list[int]]:
        """Each response's ids without padding (EOS kept)."""
        lengths = self.response_mask.sum(-1).tolist()
        return [row[: int(n)].tolist() for row, n in zip(self.response_ids, lengths)]
