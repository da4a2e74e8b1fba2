"""The semantics chain: each stage, reply repair and fallback, the HTTP back-end, the cache."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from handrecon.config import load_config
from handrecon.data.readers import create_reader
from handrecon.errors import UserError
from synth.semantics import resources
from synth.semantics.backends import BackendError, OpenAIBackend, OpenAIConfig, TransformersBackend, TransformersConfig
from synth.semantics.cache import PromptCache, cache_key, load_prompts
from synth.semantics.chain import Composer, Extractor, SemanticsChain, SemanticsConfig
from synth.semantics.poses import PoseClassifier, hand_facts
from synth.semantics.rules import RulesCaptioner, RulesExtractor, TemplateComposer
from synth.semantics.schema import COMPONENTS, ReplyError, parse_components

REPO = Path(__file__).resolve().parents[1]
GOOD = {"pose": "a man standing", "action": "cooking", "hand_action": "holding a pan", "environment": "in a kitchen"}


class Scripted:
    """A back-end answering from a list of replies, recording the conversations it got."""

    def __init__(self, replies):
        self.replies, self.seen = list(replies), []

    def chat(self, conversations):
        self.seen.append(conversations)
        return [self.replies.pop(0) for _ in conversations]


# ------------------------------------------------------------------------------------ schema
def test_replies_are_parsed_repaired_or_rejected():
    assert parse_components(json.dumps(GOOD)).repaired is False
    messy = "Sure! Here it is:\n```json\n{\u201cpose\u201d: \u201ca man standing\u201d, 'action': 'cooking', 'Hand action': ['holding', 'a pan'],"
    messy += " 'environment': None,}\n```"
    parsed = parse_components(messy)
    assert parsed.repaired and parsed.components == {**GOOD, "hand_action": "holding, a pan", "environment": ""}
    with pytest.raises(ReplyError, match="'environment' is a required property"):
        parse_components(json.dumps({k: GOOD[k] for k in ("pose", "action", "hand_action")}))
    with pytest.raises(ReplyError, match="Additional properties"):
        parse_components(json.dumps({**GOOD, "clothes": "a red shirt"}))
    with pytest.raises(ReplyError, match="no JSON object"):
        parse_components("I cannot help with that.")


# ------------------------------------------------------------------------------------- rules
@pytest.fixture(scope="module")
def samples(procedural_root, hand_model):
    reader = create_reader("ih26m", procedural_root, "test", hand_model, load_images=False)
    return [{**reader[i], "source": "procedural"} for i in range(len(reader))]


def test_rules_captions_state_the_label_facts(samples, hand_model):
    captioner, classifier = RulesCaptioner(hand_model), PoseClassifier(hand_model)
    phrases = captioner.rules["pose_phrases"]
    for sample in samples:
        caption, facts = captioner(sample), hand_facts(sample, classifier)
        for side, pose in zip(("right", "left"), facts.poses):
            if pose is not None:
                assert phrases[pose] in caption
        assert "plain patterned background" in caption
        assert ("Two hands" in caption) == (facts.arrangement != "single")


def test_rules_extractor_on_fixed_captions():
    extract = RulesExtractor()
    caption = (
        "Two hands held apart, the right hand seen from the palm side and the left hand seen from the back. "
        "The right hand is clenched into a fist, while the left hand is pointing with the index finger. "
        "The person is pointing at something. The scene is in front of a plain patterned background."
    )
    assert extract(caption) == {
        "pose": "Two hands held apart, right hand seen from the palm side and the left hand seen from the back",
        "action": "pointing at something",
        "hand_action": "right hand is clenched into a fist, left hand is pointing with the index finger",
        "environment": "in front of a plain patterned background",
    }
    # a model-style caption: appearance, objects and weather are dropped
    free = (
        "An elderly woman wearing glasses and a floral dress sits on a park bench on a sunny afternoon. "
        "She is reading a newspaper. Pigeons walk around her feet and a red bicycle leans against a tree."
    )
    assert extract(free) == {"pose": "a woman sits", "action": "reading a newspaper", "hand_action": "", "environment": "on a park bench"}
    assert extract("") == {k: "" for k in COMPONENTS}


def test_template_composer_skips_empty_components():
    compose = TemplateComposer()
    assert compose(GOOD) == "A man standing, cooking, holding a pan, in a kitchen"
    assert compose({"pose": "", "action": "cooking", "hand_action": "", "environment": "in a kitchen"}) == "Cooking, in a kitchen"


# --------------------------------------------------------------------------- model extractor
def test_extractor_paths_model_repaired_retry_and_fallback():
    captions = ["c0", "c1", "c2", "c3"]
    replies = [json.dumps(GOOD), "```json\n" + json.dumps(GOOD) + ",\n```", "no json here", "{'pose': 1}"]
    replies += [json.dumps(GOOD), "still not json"]  # the two retries
    backend = Scripted(replies)
    extractor = Extractor(backend, fewshot=2)
    out = extractor(captions)
    assert [path for _, path in out] == ["model", "model_repaired", "model_retry", "rules_fallback"]
    assert out[0][0] == GOOD and out[2][0] == GOOD and out[3][0] == RulesExtractor()("c3")
    first, retry = backend.seen
    # system prompt, two few-shot pairs, the caption
    assert [m["role"] for m in first[0]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert first[0][0]["content"] == resources.text("extractor_system.txt") and first[0][-1]["content"] == "c0"
    assert json.loads(first[0][2]["content"]) == resources.load_json("fewshot.json")[0]["components"]
    # the retry repeats the conversation with the bad reply and the error
    assert len(retry) == 2 and retry[0][-2] == {"role": "assistant", "content": "no json here"}
    assert "no JSON object found" in retry[0][-1]["content"]


def test_composer_keeps_one_line_replies_and_falls_back():
    composer = Composer(Scripted(["A man cooking in a kitchen.", "Line one\nline two", " ".join(["word"] * 61)]), max_words=60)
    out = composer([GOOD] * 3)
    assert out[0] == ("A man cooking in a kitchen.", "model")
    assert out[1] == out[2] == (TemplateComposer()(GOOD), "template_fallback")


# ----------------------------------------------------------------------------- HTTP back-end
class _Server:
    """A local OpenAI-compatible endpoint playing a script of (status, delay, body) answers."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body, dict(self.headers)))
                status, delay, reply = outer.script.pop(0) if outer.script else (200, 0, None)
                time.sleep(delay)
                if reply is None:
                    reply = {"choices": [{"message": {"role": "assistant", "content": json.dumps(GOOD)}}]}
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(script=()):
        servers.append(_Server(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _openai(url, **kw):
    return OpenAIConfig(**{"base_url": url, "model": "tiny-chat", "timeout_s": 0.5, "retries": 3, "backoff_s": 0.01, **kw})


def test_openai_backend_retries_after_500_and_a_timeout(server, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "secret")
    srv = server([(500, 0, {"error": "overloaded"}), (200, 1.5, None)])  # then the default answer
    backend = OpenAIBackend(_openai(srv.url, api_key_env="TEST_KEY"))
    assert backend.chat([[{"role": "user", "content": "hi"}]]) == [json.dumps(GOOD)]
    assert backend.stats == {"requests": 3, "retries": 2}
    path, body, headers = srv.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "tiny-chat" and body["messages"][0]["content"] == "hi"
    assert headers["Authorization"] == "Bearer secret"


def test_openai_backend_gives_up_with_a_clear_error(server):
    srv = server([(503, 0, {})] * 3)
    with pytest.raises(BackendError, match=r"no answer after 3 tries; last: HTTP 503"):
        OpenAIBackend(_openai(srv.url, retries=2)).chat([[{"role": "user", "content": "hi"}]])
    srv = server([(400, 0, {"error": "bad model"})])
    with pytest.raises(BackendError, match="HTTP 400"):
        OpenAIBackend(_openai(srv.url)).chat([[{"role": "user", "content": "hi"}]])
    assert len(srv.requests) == 1  # client errors are not retried


def test_openai_captions_send_the_image(server):
    srv = server([(200, 0, {"choices": [{"message": {"content": "Two hands clasped together in a kitchen."}}]})])
    backend = OpenAIBackend(_openai(srv.url, vision_model="tiny-vlm"))
    image = np.zeros((8, 8, 3), np.uint8)
    assert backend.describe([image], "Describe.") == ["Two hands clasped together in a kitchen."]
    body = srv.requests[0][1]
    content = body["messages"][0]["content"]
    assert body["model"] == "tiny-vlm" and content[0] == {"type": "text", "text": "Describe."}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_chain_with_the_http_backend_records_every_stage(server, samples, hand_model):
    srv = server([(200, 0, None), (200, 0, {"choices": [{"message": {"content": "Two hands clasp a mug in a cafe."}}]})])
    cfg = SemanticsConfig(extractor="openai", composer="openai", openai=_openai(srv.url, concurrency=1))
    record = SemanticsChain(cfg, hand_model)(samples[:1])[0]
    assert record["caption"] == RulesCaptioner(hand_model)(samples[0])
    assert record["components"] == GOOD and record["prompt"] == "Two hands clasp a mug in a cafe."
    assert record["paths"] == {"captioner": "rules", "extractor": "model", "composer": "model"}
    assert record["hand_words"] == ["hands", "clasp"]


# ------------------------------------------------------------------------ transformers back-end
def test_transformers_backend_names_missing_folders(tmp_path):
    backend = TransformersBackend(TransformersConfig(llm_dir=str(tmp_path / "no-llm")))
    with pytest.raises(UserError, match=f"transformers.llm_dir: folder {tmp_path / 'no-llm'} does not exist"):
        backend.chat([[{"role": "user", "content": "hi"}]])
    with pytest.raises(UserError, match="set transformers.vlm_dir"):
        backend.describe([np.zeros((4, 4, 3), np.uint8)], "Describe.")


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """A random 1-layer Llama with a BPE tokenizer and a chat template, saved like a real model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llm")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [resources.text("extractor_system.txt"), json.dumps(GOOD), "system user assistant caption hands"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=2048, eos_token_id=2, bos_token_id=1, pad_token_id=3)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_transformers_backend_chats_in_batches_and_falls_back(tiny_llm):
    backend = TransformersBackend(TransformersConfig(llm_dir=str(tiny_llm), max_new_tokens=8, batch_size=2, device="cpu"))
    convs = [[{"role": "user", "content": "hands"}], [{"role": "user", "content": "a much longer caption about hands and a kitchen"}]]
    replies = backend.chat(convs * 2)
    assert len(replies) == 4 and all(isinstance(r, str) for r in replies)
    assert replies[:2] == replies[2:]  # greedy decoding: the same conversation, the same reply
    # a random model writes no valid JSON: the extractor retries once, then uses the rules
    out = Extractor(backend, fewshot=1)(["The right hand is clenched into a fist."])
    assert out[0][1] == "rules_fallback" and out[0][0]["hand_action"] == "right hand is clenched into a fist"


# ---------------------------------------------------------------------------------- the cache
def test_cache_key_follows_what_decides_the_records():
    base = SemanticsConfig()
    assert cache_key(base) == cache_key(SemanticsConfig(openai=OpenAIConfig(model="other")))  # openai unused
    remote = SemanticsConfig(extractor="openai", openai=OpenAIConfig(model="a"))
    assert cache_key(remote) != cache_key(base)
    assert cache_key(remote) != cache_key(SemanticsConfig(extractor="openai", openai=OpenAIConfig(model="b")))
    assert cache_key(remote) == cache_key(SemanticsConfig(extractor="openai", openai=OpenAIConfig(model="a", concurrency=32)))
    assert cache_key(base) != cache_key(SemanticsConfig(tokenizer="tiny"))


def _record(sample_id: str, prompt: str) -> dict:
    return {"sample_id": sample_id, "caption": f"{prompt}, at length", "prompt": prompt}


def test_prompt_cache_drops_a_torn_line_and_never_duplicates(tmp_path):
    path = tmp_path / "p.jsonl"
    cache = PromptCache(path)
    cache.append([_record("1", "a"), _record("2", "b")])
    with open(path, "a") as fh:
        fh.write('{"sample_id": "3", "pro')  # killed mid-write
    with pytest.warns(UserWarning, match=re.escape(f"{path}: dropped an incomplete last line (23 bytes)")):
        again = PromptCache(path)
    assert sorted(again.records) == ["1", "2"] and path.read_text().endswith("}\n")
    again.append([_record("2", "b"), _record("3", "c")])
    assert [json.loads(line)["sample_id"] for line in path.read_text().splitlines()] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "line 2: not JSON"),
        (json.dumps({"sample_id": "2", "caption": "c"}), "line 2: missing field 'prompt'"),
        (json.dumps({**_record("2", "b"), "prompt": 3}), "line 2: field 'prompt' must be str, got int"),
        (json.dumps({**_record("2", "b"), "hand_columns": "0 1"}), "line 2: field 'hand_columns' must be list"),
        (json.dumps([_record("2", "b")]), "line 2: expected an object"),
    ],
)
def test_a_bad_prompt_record_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_record("1", "a")) + "\n" + line + "\n" + json.dumps(_record("3", "c")) + "\n" + '{"sample_id": "4"')
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: {message}.*; remove that line and rerun tools/semantics.py"):
        load_prompts(path)  # what the cache job and the generator's training read


@pytest.mark.slow
def test_semantics_tool_resumes_an_interrupted_run(tmp_path, procedural_root, mano_dir, hand_model):
    out = tmp_path / "prompts"
    args = [sys.executable, "tools/semantics.py", "--set", f"data_root={procedural_root}", "split=train", f"out={out}", f"mano_dir={mano_dir}",
            "batch=5"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(args + ["limit=12"], cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    (path,) = out.glob("procedural_train_*.jsonl")
    assert path.stem.endswith(cache_key(load_config(SemanticsConfig, path.with_suffix(".yaml"))))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:7]) + "\n" + lines[7][:30])  # interrupted while writing record 8
    second = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    records = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["sample_id"] for r in records]
    total = len(create_reader("ih26m", procedural_root, "train", hand_model, load_images=False))
    assert len(ids) == len(set(ids)) == total
    assert [json.loads(line) for line in lines[:7]] == records[:7]
    assert "(%d new" % (total - 7) in second.stdout
    assert load_prompts(path)[ids[0]] == records[0]
    other = subprocess.run(args + ["limit=2", "semantics.tokenizer=tiny"], cwd=REPO, env=env, capture_output=True, text=True)
    assert other.returncode == 0 and len(list(out.glob("procedural_train_*.jsonl"))) == 2  # another config, another file


def test_records_of_the_procedural_data(samples, hand_model):
    chain = SemanticsChain(SemanticsConfig(), hand_model)
    records = chain(samples)
    assert len(records) == len(samples)
    for record, sample in zip(records, samples):
        assert record["sample_id"] == sample["sample_id"] and record["paths"] == {"captioner": "rules", "extractor": "rules", "composer": "template"}
        assert record["prompt"] == TemplateComposer()(record["components"])
        ids = chain.tokenizer(record["prompt"], truncation=True, max_length=77)["input_ids"]
        decoded = "".join(chain.tokenizer.decode([ids[c]]) for c in record["hand_columns"]).replace(" ", "")
        assert decoded == "".join(w.lower() for w in record["hand_words"])[: len(decoded)]
        assert "hand" in decoded


# ---------------------------------------------------------------------------------- pose facts
@pytest.mark.parametrize("side", ["right", "left"])
def test_pose_classes_recover_the_grasp_a_pose_was_drawn_from(hand_model, side):
    from handrecon.hand_model.articulation import sample_hand_pose

    classifier = PoseClassifier(hand_model)
    rng = np.random.default_rng(1)
    for grasp in ("open", "fist", "pointing", "pinch", "grasp"):
        poses = [sample_hand_pose(rng, classifier.axes[side], classifier.means[side], grasp) for _ in range(40)]
        hits = sum(classifier.pose_class(side, p) == grasp for p in poses)
        assert hits >= 32, (grasp, hits)  # the classes overlap a little (a loose fist is a grasp)
    assert classifier.pose_class(side, np.zeros(45)) == "relaxed"  # MANO's mean hand


def test_view_and_arrangement_from_geometry(hand_model):
    import torch

    classifier = PoseClassifier(hand_model)
    zeros = dict(betas=torch.zeros(1, 10), hand_pose=torch.zeros(1, 45))
    with torch.no_grad():
        out = hand_model.hand("right", global_orient=torch.zeros(1, 3), transl=torch.tensor([[0.0, 0.0, 0.5]]), **zeros)
    joints = out.joints[0].numpy()
    normal = classifier.palm_normal("right", joints)
    ray = joints[[0, 5, 9, 17]].mean(0)
    # turning the hand by pi about the wrist swaps palm and back views
    view = classifier.view("right", joints)
    flipped = (joints - joints[0]) * np.array([-1.0, 1.0, -1.0]) + joints[0]  # rotation by pi about y
    assert {view, classifier.view("right", flipped)} == ({"palm", "back"} if abs(normal @ ray / np.linalg.norm(ray)) > 0.45 else {"side"})
    # the left hand as the right one mirrored through a plane x = c: apart, then 4 mm away
    right = out.vertices[0].numpy()

    def mirrored(c):
        reflect = np.array([-1.0, 1.0, 1.0])
        return np.concatenate([right, right * reflect + [2 * c, 0, 0]]), np.concatenate([joints, joints * reflect + [2 * c, 0, 0]])

    boxes = np.array([[0, 0, 10, 10], [50, 0, 60, 10]], float)
    assert classifier.arrangement(*mirrored(right[:, 0].max() + 0.1), boxes) == "apart"
    assert classifier.arrangement(*mirrored(right[:, 0].max() + 0.002), boxes) == "touching"


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """A random LLaVA (1-layer CLIP vision tower + 1-layer Llama) with its processor, saved like a real model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder = tmp_path_factory.mktemp("tiny_vlm")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    bpe.train_from_iterator([resources.text("captioner.txt"), "user assistant hands"], trainers.BpeTrainer(vocab_size=200, special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                        additional_special_tokens=["<image>"])  # fmt: skip
    template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}"
        "{{ c['text'] }}{% endif %}{% endfor %}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    images = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    # 16 px, 8 px patches: 4 patch tokens + the class token per image
    LlavaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=template, patch_size=8, vision_feature_select_strategy="full",
                   num_additional_image_tokens=1).save_pretrained(folder)  # fmt: skip
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, eos_token_id=2, bos_token_id=1, pad_token_id=3),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full", vision_feature_layer=-1,
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    return folder


def test_transformers_backend_captions_images_with_a_local_vlm(tiny_vlm, samples, hand_model):
    backend = TransformersBackend(TransformersConfig(vlm_dir=str(tiny_vlm), max_new_tokens=6, batch_size=2, device="cpu"))
    images = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(3)]
    captions = backend.describe(images, resources.text("captioner.txt"))
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert backend.describe(images[2:], resources.text("captioner.txt")) == captions[2:]  # a batch of one: the same caption
    # the chain with a model captioner reads the image and records the path
    from synth.semantics.chain import Captioner

    out = Captioner(backend, hand_model)([{**samples[0], "image": images[0]}])
    assert out == [(captions[0], "model")]
    with pytest.raises(UserError, match="needs images"):
        Captioner(backend, hand_model)([samples[0]])
