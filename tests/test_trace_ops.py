"""The staircase's argument resizing, on hand-made block inputs."""

import torch

from nsneurons import trace_ops


def test_query_mask_lets_each_row_see_the_prefix_and_itself():
    mask = trace_ops.query_mask(prompt_len=2, n=3, dtype=torch.float32, device="cpu")
    visible = (mask[0, 0] == 0).int().tolist()
    assert visible == [[1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 0, 1]]
    assert float(mask.min()) == torch.finfo(torch.float32).min


def test_block_inputs_grow_from_one_row_to_n():
    prompt_len, n = 4, 3
    hidden = torch.randn(1, n, 8)
    cos, sin = torch.randn(1, 1, 2), torch.randn(1, 1, 2)
    args = (torch.randn(1, 1, 8), "cache", torch.zeros(1, 1, 1, prompt_len + 1), None)
    kwargs = {
        "position_ids": torch.tensor([[4]]),
        "position_embeddings": (cos, sin),
        "use_cache": True,
        "attention_mask": torch.zeros(1, 1, 1, prompt_len + 1, dtype=torch.bool),
    }
    new_args, new_kwargs = trace_ops.grow_block_inputs((args, kwargs), hidden, prompt_len)
    assert new_args[0] is hidden and new_args[1] == "cache" and new_args[3] is None
    assert torch.equal(new_args[2], trace_ops.query_mask(prompt_len, n, torch.float32, "cpu"))
    assert new_kwargs["attention_mask"].dtype == torch.bool
    assert new_kwargs["attention_mask"][0, 0].int().tolist() == (new_args[2][0, 0] == 0).int().tolist()
    assert new_kwargs["position_ids"].tolist() == [[4, 4, 4]]
    assert torch.equal(new_kwargs["position_embeddings"][0], cos.expand(1, 3, 2))
    assert new_kwargs["use_cache"] is True
    # Hidden states passed by keyword stay a keyword.
    args2, kwargs2 = trace_ops.grow_block_inputs(((), {"hidden_states": args[0], **kwargs}), hidden, prompt_len)
    assert args2 == () and kwargs2["hidden_states"] is hidden
    assert trace_ops.block_hidden(((), {"hidden_states": hidden})) is hidden
