import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinyship.compress.states import forward_states


def test_states_match_the_models_own_hidden_states_and_attention(tiny_model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    batch = AutoTokenizer.from_pretrained(tiny_model_dir)(["a fine film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch, output_hidden_states=True, output_attentions=True)
        states = forward_states(model, dict(batch), [1, 3], "probabilities")
        scores = forward_states(model, dict(batch), [3], "scores").attention[3]
    torch.testing.assert_close(states.logits, reference.logits)
    assert len(states.hidden) == 5
    for ours, theirs in zip(states.hidden, reference.hidden_states):
        torch.testing.assert_close(ours, theirs)
    real = batch["attention_mask"][:, None, None, :].bool()
    for n in (1, 3):
        torch.testing.assert_close(states.attention[n] * real, reference.attentions[n - 1] * real)
    # scores are the pre-softmax logits: their softmax over real keys is the attention
    probabilities = scores.masked_fill(~real, float("-inf")).softmax(-1)
    torch.testing.assert_close(probabilities * real, reference.attentions[2] * real)
    assert set(states.attention) == {1, 3}
