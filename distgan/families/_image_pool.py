"""A history of generated images for the discriminator (Shrivastava et al., 2017; CycleGAN).

Once the pool holds ``size`` images, each new fake is, with probability ½, swapped for a random
older one, which D sees instead: D is trained on the generator's recent history, not only on its
latest output. The pool belongs to one rank; a family saves it through its ``state_dict`` (the
engine keeps one per rank in every checkpoint), so a resumed run draws exactly what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Draws(Protocol):
    def rand(self, *shape: int) -> torch.Tensor: ...

    def randint(self, high: int, *shape: int) -> torch.Tensor: ...


class ImagePool:
    """The pool lives on the device of the images it is given (restored checkpoints hold it on
    the CPU: it moves at the next query) and is drawn from without host syncs: the fill level is
    a count the host knows, the coin flips and picks stay on the device."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pool: torch.Tensor | None = None  # [size, C, H, W], the first ``filled`` in use
        self.filled = 0

    def query(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        """The images D sees for the batch ``images`` (detached). Draws the same amount of
        randomness whatever the pool holds, through ``draws`` (the step context: per sample,
        so K micro-batches of n draw what one batch of K·n draws)."""
        images = images.detach()
        if self.size == 0:
            return images
        n = images.shape[0]
        swaps = draws.rand(n) < 0.5
        picks = draws.randint(self.size, n)
        if self.pool is None:
            self.pool = images.new_zeros((self.size, *images.shape[1:]))
        self.pool = self.pool.to(images.device)
        out = []
        for i in range(n):  # in order: a later image may draw one this batch put in
            image = images[i]
            if self.filled < self.size:
                self.pool[self.filled] = image
                self.filled += 1
                out.append(image)
                continue
            slot = picks[i : i + 1]
            old = self.pool.index_select(0, slot)[0]
            out.append(torch.where(swaps[i], old, image))
            self.pool.index_copy_(0, slot, torch.where(swaps[i], image, old)[None])
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """The images in the pool, on the CPU (a checkpoint gathers them from every rank)."""
        if self.pool is None:
            return {"images": []}
        return {"images": [image.cpu().clone() for image in self.pool[: self.filled]]}

    @staticmethod
    def regroup(saved: list[dict[str, Any]], rank: int, world: int, size: int) -> dict[str, Any]:
        """Rank ``rank`` of ``world``'s pool from the old ranks' pools (another world size):
        their images taken in turns, dealt round-robin, at most ``size`` each."""
        pools = [state["images"] for state in saved]
        turns = [pool[i] for i in range(max(map(len, pools), default=0)) for pool in pools
                 if i < len(pool)]  # fmt: skip
        return {"images": turns[rank::world][:size]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        images = state["images"]
        self.filled = len(images)
        self.pool = None
        if images:
            self.pool = images[0].new_zeros((self.size, *images[0].shape))
            self.pool[: self.filled] = torch.stack(images)
