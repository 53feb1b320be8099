import pytest

from fixtures_models import gpt2_style_tokenizer, llama_style_tokenizer, tiny_model


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama", layers=3)


@pytest.fixture(scope="session")
def tiny_gpt2():
    return tiny_model("gpt2", layers=2)


@pytest.fixture(scope="session")
def tiny_neox():
    return tiny_model("gpt_neox", layers=2)


@pytest.fixture(scope="session")
def llama_tok():
    return llama_style_tokenizer()


@pytest.fixture(scope="session")
def gpt2_tok():
    return gpt2_style_tokenizer()
