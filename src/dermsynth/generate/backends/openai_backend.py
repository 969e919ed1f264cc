"""OpenAI's images-edit endpoint (DALL-E 2 inpainting, as the paper used through its editor).

The key comes from ``OPENAI_API_KEY`` (and the address from ``OPENAI_BASE_URL`` where set).
Rate limits (429) and server errors (5xx) are retried with exponential backoff, honouring
``Retry-After``; a content-policy refusal is recorded for its seed and the run goes on. The API
takes no random seed, so these images cannot be reproduced; the manifest leaves it empty.
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from dermsynth.config import OpenAIGenerator
from dermsynth.errors import DermsynthError
from dermsynth.generate.backends.base import Job, Result

DEFAULT_MODEL = "dall-e-2"
DALLE2_SIZES = (256, 512, 1024)
MAX_IMAGES_PER_REQUEST = 10
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_inputs(crop: Image.Image, mask: Image.Image) -> tuple[bytes, bytes]:
    """The image and mask PNGs the endpoint wants: RGBA, transparent where it may redraw.

    Our masks are white where the model redraws; the API reads alpha 0 as "edit here".
    """
    image = crop.convert("RGBA")
    alpha = mask.convert("L").point(lambda v: 255 - v)
    mask_rgba = crop.convert("RGBA")
    mask_rgba.putalpha(alpha)
    return _png(image), _png(mask_rgba)


def _is_refusal(exc: Exception) -> bool:
    text = f"{getattr(exc, 'code', '') or ''} {exc}".lower()
    return any(k in text for k in ("content_policy", "safety system", "moderation_blocked"))


class OpenAIBackend:
    """Images-edit requests, one per seed (n images each), with retries."""

    name = "openai"

    def __init__(
        self, params: OpenAIGenerator, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.params = params
        self.client: Any = None
        self._sleep = sleep

    @property
    def model_name(self) -> str:
        """``--model``, else dall-e-2."""
        return self.params.model.strip() or DEFAULT_MODEL

    @property
    def resolution(self) -> int:
        """Side of the crops sent (and of the images asked for)."""
        return self.params.resolution or 1024

    def device_name(self) -> str:
        """The images are made remotely."""
        return "api"

    def check(self) -> None:
        """The client is installed, the key is set and the size is one the model accepts."""
        try:
            import openai  # noqa: F401
        except ImportError:
            raise DermsynthError(
                "the openai backend needs the openai package: pip install 'dermsynth[openai]'"
            ) from None
        if not os.environ.get("OPENAI_API_KEY", "").strip():
            raise DermsynthError("set OPENAI_API_KEY in the environment to use the openai backend")
        if self.model_name == DEFAULT_MODEL and self.resolution not in DALLE2_SIZES:
            raise DermsynthError(
                f"dall-e-2 makes {', '.join(map(str, DALLE2_SIZES))} px images; got --resolution "
                f"{self.resolution}"
            )

    def load(self) -> None:
        """Create the client; retries are ours (so they are counted and bounded)."""
        if self.client is None:
            import openai

            self.client = openai.OpenAI(max_retries=0)

    def _request(self, job: Job, n: int) -> tuple[list[Image.Image], dict[str, Any]]:
        import openai

        image_png, mask_png = edit_inputs(job.image, job.mask)  # type: ignore[arg-type]
        size = f"{self.resolution}x{self.resolution}"
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "image": ("seed.png", image_png, "image/png"),
            "mask": ("mask.png", mask_png, "image/png"),
            "prompt": job.prompt,
            "n": n,
            "size": size,
        }
        if self.model_name.startswith("dall-e"):
            kwargs["response_format"] = "b64_json"
        attempt = 0
        while True:
            try:
                response = self.client.images.edit(**kwargs)
                break
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APIConnectionError,
            ) as exc:
                if attempt >= self.params.retries:
                    raise
                self._sleep(self._backoff(exc, attempt))
                attempt += 1
        images = [
            Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB")
            for item in response.data
        ]
        if len(images) != n:
            raise RuntimeError(f"asked for {n} images, the API returned {len(images)}")
        return images, {"api_size": size, "api_retries": attempt}

    @staticmethod
    def _backoff(exc: Exception, attempt: int) -> float:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            try:
                return min(BACKOFF_CAP_S, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)

    def generate(self, jobs: list[Job]) -> list[Result]:
        """One request per seed (split at 10 images); a failing seed gets failed results."""
        import openai

        self.load()
        results: list[Result] = []
        by_seed: dict[str, list[Job]] = {}
        for job in jobs:
            by_seed.setdefault(job.seed_id, []).append(job)
        for seed_jobs in by_seed.values():
            for start in range(0, len(seed_jobs), MAX_IMAGES_PER_REQUEST):
                part = seed_jobs[start : start + MAX_IMAGES_PER_REQUEST]
                began = time.perf_counter()
                try:
                    images, details = self._request(part[0], len(part))
                except openai.APIError as exc:
                    refused = isinstance(exc, openai.BadRequestError) and _is_refusal(exc)
                    message = f"{type(exc).__name__}: {exc}"
                    results.extend(
                        Result(j, None, 0.0, error=message, refused=refused) for j in part
                    )
                    continue
                except (OSError, RuntimeError, ValueError) as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    results.extend(Result(j, None, 0.0, error=message) for j in part)
                    continue
                seconds = (time.perf_counter() - began) / len(part)
                results.extend(
                    Result(j, image, seconds, details=details)
                    for j, image in zip(part, images, strict=True)
                )
        return results
