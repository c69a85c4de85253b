"""IntCoOp details that need no BLIP-2 weights: the captioner's loading (device, fingerprint) with the
checkpoint mocked."""

from __future__ import annotations

from unittest import mock

from peft_interp.tuners.intcoop.attributes import CaptionerAttributes


def loaded(device):
    model = mock.MagicMock()
    model.eval.return_value = model
    model.to.return_value = model
    model.config.use_decoder_only_language_model = False
    with mock.patch("transformers.AutoProcessor.from_pretrained") as processor, mock.patch(
        "transformers.Blip2ForConditionalGeneration.from_pretrained", return_value=model
    ) as blip:
        source = CaptionerAttributes.from_pretrained("me/blip2", max_new_tokens=3, device=device)
    processor.assert_called_once_with("me/blip2")
    blip.assert_called_once_with("me/blip2")
    return source, model


def test_captioner_moves_the_model_only_when_a_device_is_given():
    source, model = loaded("cuda:1")
    model.to.assert_called_once_with("cuda:1")
    assert source.fingerprint == f"captioner|me/blip2|{source.question}|3"
    _, model = loaded(None)
    model.to.assert_not_called()
