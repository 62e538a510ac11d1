"""Model shapes the GPU benchmarks build from a config (random weights, nothing downloaded):
the published Llama-3.2-1B, Llama-3.1-8B and Llama-3.1-70B configurations, Llama-2-13B's
(with one change, below), and a tiny one for any machine.

"llama-2-13b" has Llama-2-13B's published config except its vocabulary: 49152 tokens, the
size of the SmolLM2 tokenizer the benchmarks carry (they tokenize with it: a 32000-token
embedding would be indexed past its end by ids 32000-49151). That adds 2 x 17152 x 5120 =
176 M parameters (embeddings and lm_head, untied) to the published 13.02 B: 13.19 B here.
The Llama-3 shapes' 128256-token vocabularies are larger than the tokenizer's, which is safe.
"""

SHAPES = {
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "llama-2-13b": dict(
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        head_dim=128,
        vocab_size=49152,  # published: 32000; see the module's docstring
        max_position_embeddings=4096,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "llama-3.1-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    ),
}
# Short names the throughput benchmark and its results use.
SHAPES["1b"], SHAPES["8b"] = SHAPES["llama-3.2-1b"], SHAPES["llama-3.1-8b"]
SHAPES["13b"], SHAPES["70b"] = SHAPES["llama-2-13b"], SHAPES["llama-3.1-70b"]
