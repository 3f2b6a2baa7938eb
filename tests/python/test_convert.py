"""quartet.torch.convert on a model laid out like a Hugging Face Llama (built here, so the test
needs no download), and on a real LlamaForCausalLM where transformers is installed."""

import unittest

import torch

import quartet.torch as qt
from support import bits_equal


class Attention(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q_proj = torch.nn.Linear(d, d, bias=False)
        self.k_proj = torch.nn.Linear(d, d, bias=False)
        self.v_proj = torch.nn.Linear(d, d, bias=False)
        self.o_proj = torch.nn.Linear(d, d, bias=False)


class Mlp(torch.nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.gate_proj = torch.nn.Linear(d, ffn, bias=False)
        self.up_proj = torch.nn.Linear(d, ffn, bias=False)
        self.down_proj = torch.nn.Linear(ffn, d, bias=True)  # a bias, to see it copied


class Block(torch.nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.self_attn = Attention(d)
        self.mlp = Mlp(d, ffn)


class Body(torch.nn.Module):
    def __init__(self, vocab, d, ffn, n):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(vocab, d)
        self.layers = torch.nn.ModuleList([Block(d, ffn) for _ in range(n)])


class TinyLlama(torch.nn.Module):
    """The module tree of transformers' LlamaForCausalLM (model.layers.N.self_attn.q_proj, ...,
    lm_head), without its computation."""

    def __init__(self, vocab=256, d=128, ffn=256, n=4, tie=False):
        super().__init__()
        self.model = Body(vocab, d, ffn, n)
        self.lm_head = torch.nn.Linear(d, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_output_embeddings(self):
        return self.lm_head


def linear_names(model, kind):
    return sorted(name for name, m in model.named_modules() if type(m) is kind)


class Convert(unittest.TestCase):
    def test_every_block_linear_but_not_the_head(self):
        torch.manual_seed(0)
        qt.manual_seed(0)
        model = TinyLlama()
        before = {name: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
                  for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.assertIs(qt.convert(model, recipe="quartet2", seed=5), model)
        converted = linear_names(model, qt.Linear)
        self.assertEqual(len(converted), 4 * 7)
        self.assertEqual(linear_names(model, torch.nn.Linear), ["lm_head"])
        for name in converted:
            m = model.get_submodule(name)
            weight, bias = before[name]
            self.assertTrue(bits_equal(m.weight, weight), name)
            self.assertEqual(m.bias is None, bias is None, name)
            if bias is not None:
                self.assertTrue(bits_equal(m.bias, bias), name)
            self.assertEqual((m.recipe, m.seed), ("quartet2", 5))
        # Layer indices in module order from the last manual_seed: distinct random streams.
        in_order = [name for name, m in model.named_modules() if isinstance(m, qt.Linear)]
        self.assertEqual([model.get_submodule(n).layer for n in in_order], list(range(len(converted))))

    def test_filters(self):
        model = TinyLlama()
        qt.convert(model, recipe="nvidia", skip=["*.mlp.down_proj", "model.layers.2.self_attn.*"], first_blocks=1,
                   last_blocks=1, lm_head=True)
        expected = ["lm_head"] + [f"model.layers.{i}.{p}" for i in (1, 2) for p in
                                  ("mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj",
                                   "self_attn.q_proj", "self_attn.v_proj")]
        expected = [n for n in expected if not n.startswith("model.layers.2.self_attn")]
        self.assertEqual(linear_names(model, qt.Linear), sorted(expected))

    def test_options_and_bf16_inputs(self):
        model = TinyLlama().bfloat16()
        qt.convert(model, recipe="quartet2", backward_rotation=32)
        layer = model.model.layers[0].self_attn.q_proj
        self.assertEqual(layer.weight.dtype, torch.float32)  # the FP32 master of a BF16 weight
        self.assertIn("RHT-32", layer.describe())
        x = torch.randn(2, 64, 128).bfloat16().requires_grad_(True)
        layer(x).float().square().sum().backward()
        self.assertEqual(x.grad.dtype, torch.bfloat16)
        self.assertTrue(torch.isfinite(layer.weight.grad).all())

    def test_a_shape_the_recipe_cannot_take_names_the_layer_and_changes_nothing(self):
        model = TinyLlama(ffn=200)  # quartet2 rotates the dgrad GEMM along out_features by 128
        qt.manual_seed(0)
        with self.assertRaises(ValueError) as caught:
            qt.convert(model, recipe="quartet2")
        message = str(caught.exception)
        self.assertIn("layer 'model.layers.0.mlp.gate_proj' (128 -> 200)", message)
        self.assertIn("out_features = 200, which is not a multiple of 128", message)
        self.assertEqual(linear_names(model, qt.Linear), [], "a refused conversion replaced layers")
        self.assertEqual(qt.Linear(16, 16, recipe="bf16").layer, 0, "a refused conversion took layer indices")

    def test_tied_head(self):
        model = TinyLlama(tie=True)
        with self.assertRaises(ValueError) as caught:
            qt.convert(model, recipe="bf16", lm_head=True)
        self.assertIn("layer 'lm_head' shares its weight with model.embed_tokens.weight", str(caught.exception))
        qt.convert(model, recipe="bf16")  # the head left out: fine, and still tied
        self.assertIs(model.lm_head.weight, model.model.embed_tokens.weight)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError) as caught:
            qt.convert(TinyLlama(n=2), first_blocks=2, last_blocks=1)
        self.assertIn("leave none of the 2 blocks of 'model.layers'", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            qt.convert(TinyLlama(), first_blocks=-1)
        self.assertIn("first_blocks must be a non-negative int, got -1", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            qt.convert(TinyLlama(), recipe="quartet3")
        self.assertIn("unknown recipe 'quartet3'", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            qt.convert(torch.nn.Sequential(torch.nn.Linear(16, 16)), first_blocks=1)
        self.assertIn("name one with blocks=", str(caught.exception))
        with self.assertRaises(TypeError):
            qt.convert("model")


class HuggingFaceLlama(unittest.TestCase):
    def test_convert_and_train_a_step(self):
        try:
            import transformers
        except ImportError as e:
            self.skipTest(f"transformers is not installed ({e})")
        torch.manual_seed(0)
        # Every projection's output a multiple of 128, which quartet2's dgrad rotation needs
        # (4 key/value heads of 32: k_proj and v_proj give 128).
        config = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
        model = transformers.LlamaForCausalLM(config)
        qt.convert(model, recipe="quartet2")
        self.assertEqual(len(linear_names(model, qt.Linear)), 2 * 7)
        tokens = torch.randint(0, 256, (2, 64))
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        self.assertTrue(torch.isfinite(loss))
        self.assertTrue(torch.isfinite(model.model.layers[0].mlp.down_proj.weight.grad).all())


if __name__ == "__main__":
    unittest.main()
