"""genlab: train, measure, apply and serve generative models.

    import genlab
    run_dir = genlab.train("vae-digits", ["epochs=5"])
    model = genlab.load(run_dir)
    images = genlab.sample(model, 16, seed=0)

    run_dir = genlab.train("gpt-pydoc-bpe", ["steps=300"])
    texts = genlab.generate(genlab.load(run_dir), "The with statement", max_new_tokens=200, temperature=0.8)

    run_dir = genlab.train("translate-zh-en", minutes=20)
    genlab.translate(genlab.load(run_dir), ["我们走吧。", "你好吗？"])   # beam 4: ["Let's go.", "How are you?"]
"""

from ._version import __version__
from .api import evaluate, generate, sample, train
from .artifact import load
from .config import list_recipes
from .errors import GenlabError
from .tasks.textpairs import chat, chat_stream, translate

__all__ = ["__version__", "load", "train", "sample", "generate", "translate", "chat", "chat_stream", "evaluate", "list_recipes", "GenlabError"]
