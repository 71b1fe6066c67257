"""A history of generated images for the discriminator (Shrivastava et al., 2017; CycleGAN).

Once the pool holds ``size`` images, each new fake is, with probability ½, swapped for a random
older one, which D sees instead: D is trained on the generator's recent history, not only on its
latest output. The pool belongs to one rank; a family saves it through its ``state_dict`` (the
engine keeps one per rank in every checkpoint), so a resumed run draws exactly what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The images D sees for the batch ``images`` (detached). Draws the same amount of
        randomness whatever the pool holds, with one host sync per batch."""
        if self.size == 0:
            return images.detach()
        n = images.shape[0]
        coins = torch.rand(n, device=images.device, generator=generator).tolist()
        picks = torch.randint(self.size, (n,), device=images.device, generator=generator).tolist()
        out = []
        for image, coin, pick in zip(images.detach(), coins, picks, strict=True):
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif coin < 0.5:
                out.append(self.images[pick])
                self.images[pick] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [image.clone() for image in self.images]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = [image.clone() for image in state["images"]]
