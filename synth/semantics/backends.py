"""Language-model back-ends of the chain, behind one small interface.

A back-end answers two kinds of request, both batched:

* ``chat(conversations) -> replies``: each conversation is a list of ``{"role", "content"}``
  messages (system / user / assistant); the reply is the model's next message as text.
* ``describe(images, instruction) -> captions``: one caption per RGB uint8 image.

``transformers`` loads local model folders (never the hub); ``openai`` talks to any
OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, ...) with timeouts, retries
and a concurrency limit. The offline ``rules`` path is not a back-end: it needs no model.
"""
from __future__ import annotations

import base64
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from handrecon.config import check_fields
from handrecon.errors import UserError


class BackendError(RuntimeError):
    """A back-end could not answer (after its retries); the message names the endpoint or folder."""


class Backend(Protocol):
    def chat(self, conversations: list[list[dict]]) -> list[str]: ...

    def describe(self, images: list[np.ndarray], instruction: str) -> list[str]: ...


@dataclass
class OpenAIConfig:
    base_url: str = "http://127.0.0.1:8000/v1"  # the server's OpenAI-compatible root
    model: str = ""  # chat model for the extractor and composer
    vision_model: str = ""  # model for captions; empty: `model`
    api_key_env: str = "OPENAI_API_KEY"  # environment variable with the key; unset: no key sent
    timeout_s: float = 60.0  # per request; > 0
    retries: int = 3  # further tries after a timeout, a connection error, HTTP 429 or 5xx; >= 0
    backoff_s: float = 1.0  # wait before retry k: backoff_s * 2**k; >= 0
    concurrency: int = 4  # requests in flight; >= 1
    temperature: float = 0.0  # >= 0
    max_tokens: int = 256  # >= 1

    def __post_init__(self) -> None:
        check_fields(self, "> 0", "timeout_s")
        check_fields(self, ">= 0", "retries", "backoff_s", "temperature")
        check_fields(self, ">= 1", "concurrency", "max_tokens")


@dataclass
class TransformersConfig:
    llm_dir: str = ""  # local instruction-tuned causal LM (extractor, composer), e.g. Qwen2.5-7B-Instruct
    vlm_dir: str = ""  # local image-text-to-text model (captioner), e.g. Qwen2.5-VL-7B-Instruct
    device: str = "auto"  # auto: cuda when available
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU; or float32 / float16 / bfloat16
    batch_size: int = 8  # >= 1
    max_new_tokens: int = 200  # >= 1

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "batch_size", "max_new_tokens")


def png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class OpenAIBackend:
    """Chat completions over HTTP. `stats` counts requests and retries (for reports and tests)."""

    def __init__(self, cfg: OpenAIConfig):
        if not cfg.model:
            raise UserError("openai back-end: set openai.model (the model name the server serves)")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.stats = {"requests": 0, "retries": 0}

    def _complete(self, messages: list[dict], model: str) -> str:
        import requests

        cfg = self.cfg
        payload = {"model": model, "messages": messages, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        problem = ""
        for attempt in range(cfg.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(cfg.backoff_s * 2 ** (attempt - 1))
            self.stats["requests"] += 1
            try:
                reply = requests.post(self.url, json=payload, headers=self.headers, timeout=cfg.timeout_s)
            except (requests.Timeout, requests.ConnectionError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if reply.status_code == 429 or reply.status_code >= 500:
                problem = f"HTTP {reply.status_code}: {reply.text[:200]}"
                continue
            if reply.status_code >= 400:
                raise BackendError(f"{self.url}: HTTP {reply.status_code}: {reply.text[:300]}")
            try:
                return reply.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise BackendError(f"{self.url}: not a chat-completions answer: {reply.text[:300]}") from None
        raise BackendError(f"{self.url}: no answer after {cfg.retries + 1} tries; last: {problem}")

    def _map(self, fn, items: list) -> list:
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(fn, items))

    def chat(self, conversations: list[list[dict]]) -> list[str]:
        return self._map(lambda messages: self._complete(messages, self.cfg.model), conversations)

    def describe(self, images: list[np.ndarray], instruction: str) -> list[str]:
        model = self.cfg.vision_model or self.cfg.model

        def one(image: np.ndarray) -> str:
            content = [{"type": "text", "text": instruction}, {"type": "image_url", "image_url": {"url": png_data_url(image)}}]
            return self._complete([{"role": "user", "content": content}], model)

        return self._map(one, images)


def _local_folder(path: str, key: str, what: str) -> Path:
    if not path:
        raise UserError(f"transformers back-end: set transformers.{key} to a local folder with {what}")
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"transformers.{key}: folder {folder} does not exist (expected {what}, saved with save_pretrained)")
    return folder


def _torch_setup(cfg: TransformersConfig):
    import torch

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def _batches(items: list, size: int):
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


class TransformersBackend:
    """Local models: a causal LM for chat, an image-text-to-text model for captions (each loaded
    on first use, from its folder only)."""

    def __init__(self, cfg: TransformersConfig):
        self.cfg = cfg
        self.device, self.dtype = _torch_setup(cfg)
        self._llm = self._vlm = None

    def _load(self, key: str, what: str, preprocessor_cls, model_cls):
        """(tokenizer or processor, model on the device) from the folder `transformers.<key>`."""
        folder = _local_folder(getattr(self.cfg, key), key, what)
        try:
            pre = preprocessor_cls.from_pretrained(folder, local_files_only=True)
            model = model_cls.from_pretrained(folder, local_files_only=True, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load {what} from {folder}: {exc}") from None
        tokenizer = getattr(pre, "tokenizer", pre)
        tokenizer.padding_side = "left"  # generation continues the right end of every row
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return pre, model.to(self.device).eval()

    def _load_llm(self):
        if self._llm is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._llm = self._load("llm_dir", "an instruction-tuned causal language model", AutoTokenizer, AutoModelForCausalLM)
        return self._llm

    def _load_vlm(self):
        if self._vlm is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self._vlm = self._load("vlm_dir", "an image-text-to-text model and its processor", AutoProcessor, AutoModelForImageTextToText)
        return self._vlm

    def _generate(self, model, inputs: dict, decode) -> list[str]:
        import torch

        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in decode(new, skip_special_tokens=True)]

    def chat(self, conversations: list[list[dict]]) -> list[str]:
        tokenizer, model = self._load_llm()
        replies: list[str] = []
        for batch in _batches(conversations, self.cfg.batch_size):
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in batch]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            replies += self._generate(model, dict(inputs), tokenizer.batch_decode)
        return replies

    def describe(self, images: list[np.ndarray], instruction: str) -> list[str]:
        from PIL import Image

        processor, model = self._load_vlm()
        message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        prompt = processor.apply_chat_template(message, add_generation_prompt=True)
        captions: list[str] = []
        for batch in _batches(images, self.cfg.batch_size):
            pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in batch]
            inputs = processor(images=pil, text=[prompt] * len(pil), return_tensors="pt", padding=True).to(self.device, dtype=self.dtype)
            captions += self._generate(model, dict(inputs), processor.batch_decode)
        return captions


__all__ = ["Backend", "BackendError", "OpenAIBackend", "OpenAIConfig", "TransformersBackend", "TransformersConfig", "png_data_url"]
