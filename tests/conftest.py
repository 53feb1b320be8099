import pytest
from fixtures_models import gpt2_style_tokenizer, llama_style_tokenizer, tiny_model

# One local NDIF server per test session, shared by every `ndif`-marked module (started only
# when a test asks for it; see tests/ndif_server.py).
from ndif_server import ndif_server  # noqa: F401


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
