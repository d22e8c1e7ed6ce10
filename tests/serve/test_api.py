"""The OpenAI API through the official ``openai`` client: served answers are exactly ``pipe.chat``'s."""

from __future__ import annotations

import httpx

from tests.serve.conftest import MAX_MODEL_LEN, data_url


def _image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def _counts(pipe, messages, num_frames=None):
    count = pipe.processor.count_tokens(
        conversation=messages, add_generation_prompt=True, tags_in_text=False, num_frames=num_frames
    )
    image = sum(p.tokens for p in count.parts if p.kind == "image")
    video = sum(p.tokens for p in count.parts if p.kind == "video")
    return count.total, image, video


def test_models_list_names_every_served_model(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny", "tiny-b"]
    assert models.data[0].owned_by == "onevision"
    assert client.models.retrieve("tiny-b").id == "tiny-b"
    health = httpx.get(server.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and set(health["models"]) == {"tiny", "tiny-b"}


def test_text_only_answer_and_usage_match_the_pipeline(client, pipe):
    messages = [{"role": "user", "content": "Say something."}]
    out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    expected = pipe.chat(messages, max_new_tokens=8)
    assert out.choices[0].message.content == expected
    assert out.choices[0].message.role == "assistant"
    total, _, _ = _counts(pipe, messages)
    assert out.usage.prompt_tokens == total
    assert 1 <= out.usage.completion_tokens <= 8
    assert out.usage.total_tokens == total + out.usage.completion_tokens
    assert out.choices[0].finish_reason == ("length" if out.usage.completion_tokens == 8 else "stop")


def test_one_image_as_base64_counts_visual_tokens(client, pipe, media):
    question = "What is in the picture?"
    out = client.chat.completions.create(
        model="tiny",
        messages=[
            {
                "role": "user",
                "content": [_image_part(data_url(media / "a.png")), {"type": "text", "text": question}],
            }
        ],
        max_tokens=10,
    )
    reference = [
        {
            "role": "user",
            "content": [{"type": "image", "image": str(media / "a.png")}, {"type": "text", "text": question}],
        }
    ]
    assert out.choices[0].message.content == pipe.chat(reference, max_new_tokens=10)
    total, image, video = _counts(pipe, reference)
    assert image == 118 and video == 0  # the single-image policy (anyres_max_9) at the tiny geometry
    assert out.usage.prompt_tokens == total  # visual tokens included
    details = out.usage.prompt_tokens_details
    assert details.image_tokens == image and details.video_tokens == 0
    assert details.text_tokens == total - image


def test_two_images_use_the_multi_image_policy(client, pipe, media):
    out = client.chat.completions.create(
        model="tiny",
        messages=[
            {
                "role": "user",
                "content": [
                    _image_part(data_url(media / "a.png")),
                    _image_part(data_url(media / "b.jpg")),
                    {"type": "text", "text": "What differs?"},
                ],
            }
        ],
        max_tokens=10,
    )
    reference = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(media / "a.png")},
                {"type": "image", "image": str(media / "b.jpg")},
                {"type": "text", "text": "What differs?"},
            ],
        }
    ]
    assert out.choices[0].message.content == pipe.chat(reference, max_new_tokens=10)
    total, image, _ = _counts(pipe, reference)
    assert image == 2 * 65  # pad: one tile + one newline each
    assert out.usage.prompt_tokens == total and out.usage.prompt_tokens_details.image_tokens == image


def test_video_with_num_frames(client, pipe, media):
    out = client.chat.completions.create(
        model="tiny",
        messages=[
            {
                "role": "user",
                "content": [
                    _video_part(data_url(media / "clip.mp4")),
                    {"type": "text", "text": "What happens?"},
                ],
            }
        ],
        max_tokens=10,
        extra_body={"num_frames": 4},
    )
    reference = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": str(media / "clip.mp4")},
                {"type": "text", "text": "What happens?"},
            ],
        }
    ]
    assert out.choices[0].message.content == pipe.chat(reference, max_new_tokens=10, num_frames=4)
    total, image, video = _counts(pipe, reference, num_frames=4)
    assert video == 4 * 16 + 1 and image == 0
    assert out.usage.prompt_tokens == total and out.usage.prompt_tokens_details.video_tokens == video


def test_file_url_under_an_allowed_path_and_multi_turn(client, pipe, media):
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [_image_part((media / "c.png").as_uri()), {"type": "text", "text": "Hi?"}],
        },
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "And now?"},
    ]
    out = client.chat.completions.create(model="tiny-b", messages=messages, max_tokens=8)
    reference = [
        messages[0],
        {
            "role": "user",
            "content": [{"type": "image", "image": str(media / "c.png")}, {"type": "text", "text": "Hi?"}],
        },
        *messages[2:],
    ]
    assert out.model == "tiny-b"
    assert out.choices[0].message.content == pipe.chat(reference, max_new_tokens=8)


def test_streaming_concatenates_to_the_answer_and_ends_with_usage(client, pipe, media):
    for i, question in enumerate(["Describe it.", "Another question here", "x"]):
        messages = [
            {
                "role": "user",
                "content": [_image_part(data_url(media / "b.jpg")), {"type": "text", "text": question}],
            }
        ]
        stream = client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=24 + i,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        reference = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": str(media / "b.jpg")},
                    {"type": "text", "text": question},
                ],
            }
        ]
        expected = pipe.chat(reference, max_new_tokens=24 + i)
        assert "".join(pieces) == expected
        assert sum(1 for p in pieces if p) >= 2  # really streamed, not one piece at the end
        assert len(finish) == 1 and finish[0] in ("stop", "length")
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert last.usage.prompt_tokens == _counts(pipe, reference)[0]
        assert last.usage.prompt_tokens_details.image_tokens == 268
        non_streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24 + i)
        assert non_streamed.choices[0].message.content == expected
        assert non_streamed.usage.completion_tokens == last.usage.completion_tokens


def test_stop_sequences_cut_the_answer_in_both_modes(client, pipe):
    messages = [{"role": "user", "content": "Tell me a story."}]
    full = pipe.chat(messages, max_new_tokens=24)
    assert len(full) > 6
    stop = full[3:5]  # a piece of the greedy answer: generation must end there
    expected = full[: full.find(stop)]
    out = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=24, stop=[stop, "@@never@@"]
    )
    assert out.choices[0].message.content == expected
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens < 24
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=24, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_sampling_with_a_seed_reproduces_the_pipeline(client, pipe):
    messages = [{"role": "user", "content": "Sample something."}]
    options = {"temperature": 0.9, "top_p": 0.8, "seed": 1234}
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, **options)
    second = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, **options)
    expected = pipe.chat(messages, max_new_tokens=12, **options)
    assert first.choices[0].message.content == second.choices[0].message.content == expected


def test_model_card_reports_the_context(server):
    card = httpx.get(server.url + "/v1/models/tiny", timeout=10).json()
    assert card["id"] == "tiny" and card["max_model_len"] == MAX_MODEL_LEN


def test_metrics_are_prometheus_text(client, server):
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "m"}], max_tokens=3)
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for name in (
        "onevision_requests_total",
        "onevision_queue_depth",
        "onevision_running_requests",
        "onevision_generation_tokens_total",
        "onevision_generation_tokens_per_second",
        "onevision_request_latency_seconds_bucket",
        "onevision_time_to_first_token_seconds_bucket",
        "onevision_batch_size_bucket",
    ):
        assert name in text, name
    assert server.metric("onevision_requests_total", model="tiny", code="200") >= 1
    assert server.metric("onevision_request_latency_seconds_count", model="tiny") >= 1
    assert server.metric("onevision_generation_tokens_per_second", model="tiny") > 0
