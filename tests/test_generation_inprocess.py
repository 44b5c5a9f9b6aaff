"""`TransformersBackend` on tiny random checkpoints built offline: a LLaVA (image-text-to-text) and a text-only LM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmsieve.generation import ChatRequest, TransformersBackend
from mmsieve.generation.transformers_backend import NO_IMAGES
from mmsieve.models.tiny import CORPUS, build_tiny_chat_lm, build_tiny_llava


Replies = dict[str, tuple[str | None, str | None]]


@pytest.fixture(scope="session")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def chat_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_lm(tmp_path_factory.mktemp("tiny-chat-lm"))


def run(backend: TransformersBackend, requests: list[ChatRequest]) -> Replies:
    replies = {request.key: (text, error) for request, text, error in backend.generate(requests)}
    assert len(replies) == len(requests)
    for text, error in replies.values():
        assert (text is None) != (error is None)  # exactly one of them
    return replies


def texts(replies: Replies) -> dict[str, str]:
    assert all(error is None for _, error in replies.values()), replies
    return {key: text for key, (text, _) in replies.items() if text is not None}


def varied_requests(photos: dict[str, bytes], png: bytes, *, images: bool) -> list[ChatRequest]:
    """Prompts of 1 to ~30 tokens, with and without a system message; with `images`, every other one has 1-2."""
    pictures = [[photos["chelsea"]], [png], [photos["coffee"], photos["rocket"]], [photos["astronaut"]]]
    requests = []
    for i, prompt in enumerate(("x", *CORPUS[:9])):
        attached = pictures[i // 2 % len(pictures)] if images and i % 2 else []
        requests.append(ChatRequest(f"r{i}", "Be brief." if i % 3 else "", prompt, attached))
    return requests


def test_batched_equals_one_at_a_time(
    vlm: Path, chat_lm: Path, photos: dict[str, bytes], broken: dict[str, bytes | None]
) -> None:
    png = broken["png_16bit"]
    assert png is not None and png.startswith(b"\x89PNG")
    for path, images in ((vlm, True), (chat_lm, False)):
        requests = varied_requests(photos, png, images=images)
        batched = texts(run(TransformersBackend(path, batch_size=4, max_new_tokens=10), requests))
        alone = texts(run(TransformersBackend(path, batch_size=1, max_new_tokens=10), requests))
        assert batched == alone
        assert len(set(batched.values())) >= len(requests) // 2  # replies depend on the prompt: a real check


def test_vlm_text_only_and_mixed(vlm: Path, photos: dict[str, bytes]) -> None:
    backend = TransformersBackend(vlm, batch_size=4, max_new_tokens=8)
    assert backend.takes_images
    text_only = [ChatRequest(f"t{i}", "", prompt) for i, prompt in enumerate(CORPUS[:5])]
    with_images = [ChatRequest(f"i{i}", "", prompt, [photos["coins"]]) for i, prompt in enumerate(CORPUS[:5])]
    alone = texts(run(backend, text_only)) | texts(run(backend, with_images))
    mixed = texts(run(backend, [r for pair in zip(text_only, with_images) for r in pair]))
    assert mixed == alone
    assert any(alone[f"t{i}"] != alone[f"i{i}"] for i in range(5))  # the image changes the reply


def test_text_lm(chat_lm: Path, photos: dict[str, bytes]) -> None:
    backend = TransformersBackend(chat_lm, batch_size=4, max_new_tokens=8)
    assert not backend.takes_images and backend._processor is None
    assert backend._tokenizer.padding_side == "left"
    requests = [ChatRequest(f"t{i}", "Judge.", prompt) for i, prompt in enumerate(CORPUS[:3])]
    requests.append(ChatRequest("img", "Judge.", "What is in the image?", [photos["moon"]]))
    replies = run(backend, requests)
    assert replies["img"] == (None, NO_IMAGES) == (None, "this model takes no images")
    assert all(isinstance(replies[f"t{i}"][0], str) for i in range(3))


def test_bad_image_fails_alone(vlm: Path, photos: dict[str, bytes], broken: dict[str, bytes | None]) -> None:
    backend = TransformersBackend(vlm, batch_size=4, max_new_tokens=6)
    good = [
        ChatRequest(f"g{i}", "", f"photo {i}", [photos[name]]) for i, name in enumerate(("clock", "moon", "coins"))
    ]
    bad_image = broken["truncated_jpeg"]
    assert bad_image is not None
    bad = ChatRequest("bad", "", "photo 3", [photos["camera"], bad_image])
    replies = run(backend, [*good[:2], bad, good[2]])
    text, error = replies.pop("bad")
    assert text is None and error is not None and error.startswith("image_truncated")
    assert texts(replies) == texts(run(backend, good))


def test_must_finish(chat_lm: Path) -> None:
    backend = TransformersBackend(chat_lm, batch_size=4, max_new_tokens=6)
    prompts = list(enumerate(CORPUS))
    loose = run(backend, [ChatRequest(f"k{i}", "", prompt) for i, prompt in prompts])
    strict = run(backend, [ChatRequest(f"k{i}", "", prompt, must_finish=True) for i, prompt in prompts])
    truncated = {key for key, (_, error) in strict.items() if error is not None}
    assert truncated and len(truncated) < len(prompts)  # the tiny model ends some replies within 6 tokens
    for key, (text, error) in strict.items():
        if key in truncated:
            assert error == "truncated at 6 tokens" and isinstance(loose[key][0], str)
        else:
            assert text == loose[key][0]


def reference_ids(backend: TransformersBackend, request: ChatRequest, n: int) -> list[int]:
    """The first `n` greedy token ids of one request, straight from `model.generate` (batch of one, no backend)."""
    from mmsieve.images import decode_image

    text = backend._prompt(request)
    if request.images:
        images = [[decode_image(im).image for im in request.images]]
        inputs = backend._processor(images=images, text=[text], return_tensors="pt")
    else:
        inputs = backend._tokenizer([text], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = backend._model.generate(**inputs, max_new_tokens=n, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def test_per_request_max_tokens(chat_lm: Path, vlm: Path, photos: dict[str, bytes]) -> None:
    prompt = CORPUS[7]  # its replies do not end within 12 tokens
    for path, images in ((chat_lm, []), (vlm, [photos["chelsea"]])):
        backend = TransformersBackend(path, batch_size=4, max_new_tokens=12)
        limits = {2: 2, 5: 5, 12: None}  # expected tokens -> the request's max_tokens
        requests = [ChatRequest(str(n), "", prompt, images, max_tokens=limit) for n, limit in limits.items()]
        replies = texts(run(backend, requests))
        ids = reference_ids(backend, requests[-1], 12)
        assert len(ids) == 12 and backend._tokenizer.eos_token_id not in ids
        for n in limits:  # re-tokenizing a reply is no count: BPE may split generated text differently
            assert replies[str(n)] == backend._tokenizer.decode(ids[:n], skip_special_tokens=True)
        assert len(set(replies.values())) == 3
        strict = run(backend, [ChatRequest("s", "", prompt, images, max_tokens=3, must_finish=True)])
        assert strict["s"] == (None, "truncated at 3 tokens")


def test_no_system_message_when_empty(vlm: Path, chat_lm: Path, photos: dict[str, bytes]) -> None:
    for path in (vlm, chat_lm):
        backend = TransformersBackend(path)
        backend._load()
        assert backend._prompt(ChatRequest("k", "", "hello")) == "user: hello\nassistant: "
        assert backend._prompt(ChatRequest("k", "Be brief.", "hello")) == "system: Be brief.\nuser: hello\nassistant: "
    image = ChatRequest("k", "", "hello", [photos["coffee"]])
    assert backend._prompt(image) == "user: hello\nassistant: "  # the text LM renders no image
    backend = TransformersBackend(vlm)
    backend._load()
    assert backend._prompt(image) == "user: <image>hello\nassistant: "


def test_sampling_options(chat_lm: Path) -> None:
    requests = [ChatRequest(f"k{i}", "", prompt) for i, prompt in enumerate(CORPUS[:6])]
    greedy = texts(run(TransformersBackend(chat_lm, max_new_tokens=8), requests))
    sampler = TransformersBackend(chat_lm, max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.95)
    sampled = []
    for _ in range(2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            sampled.append(texts(run(sampler, requests)))
    assert sampled[0] == sampled[1] != greedy


def test_batches_sorted_and_grouped(vlm: Path, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    backend = TransformersBackend(vlm, batch_size=2, max_new_tokens=4)
    batches: list[list[tuple[str, bool, int]]] = []
    run_batch = backend._run

    def spy(batch: list) -> list[list[int]]:
        batches.append([(request.key, bool(images), limit) for request, images, limit, _ in batch])
        return run_batch(batch)

    monkeypatch.setattr(backend, "_run", spy)
    words = "one two three four five six seven eight".split()
    requests = [ChatRequest(f"w{n}", "", " ".join(words[:n])) for n in (8, 1, 6, 3, 7, 2)]
    requests += [ChatRequest("img", "", "a", [photos["clock"]]), ChatRequest("short", "", "a", max_tokens=2)]
    run(backend, requests)
    keys = [[key for key, _, _ in batch] for batch in batches]
    assert sorted(map(sorted, keys)) == sorted([["w1", "w2"], ["w3", "w6"], ["w7", "w8"], ["img"], ["short"]])
    assert all(len({(kind, limit) for _, kind, limit in batch}) == 1 for batch in batches)


def test_loaded_models_are_not_pickled(vlm: Path) -> None:
    """datatrove ships steps to workers and `Dataset.map` hashes them: a loaded model must not travel along."""
    import pickle

    backend = TransformersBackend(vlm, batch_size=2, max_new_tokens=4)
    first = [text for _, text, _ in backend.generate([ChatRequest("a", "", "hello")])]
    assert backend._model is not None
    copy = pickle.loads(pickle.dumps(backend))
    assert copy._model is None and copy._processor is None and copy._tokenizer is None
    assert [text for _, text, _ in copy.generate([ChatRequest("a", "", "hello")])] == first  # it loads again
