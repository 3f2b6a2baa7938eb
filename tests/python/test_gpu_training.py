"""A Hugging Face Llama converted to quartet2 trains on a GPU next to its BF16 twin (the GPU
machine; skipped without CUDA or transformers).

Data: sequences of a fixed random Markov chain in which each token has 4 equally likely
successors, so the loss can fall from ln(512) = 6.24 to ln(4) = 1.39. Both models start from
the same weights, see the same batches and run under BF16 autocast with AdamW.
"""

import copy
import math
import unittest

import torch

import quartet
import quartet.torch as qt

VOCAB, SUCCESSORS, BATCH, SEQ, STEPS = 512, 4, 8, 128, 300


def markov_batches(seed, device):
    g = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, VOCAB, (VOCAB, SUCCESSORS), generator=g)
    while True:
        tokens = torch.empty(BATCH, SEQ, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, VOCAB, (BATCH,), generator=g)
        for t in range(1, SEQ):
            choice = torch.randint(0, SUCCESSORS, (BATCH,), generator=g)
            tokens[:, t] = successors[tokens[:, t - 1], choice]
        yield tokens.to(device)


def train(model, device):
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    batches = markov_batches(1, device)
    for _ in range(STEPS):
        tokens = next(batches)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


class ConvertedLlamaTrains(unittest.TestCase):
    def test_quartet2_next_to_bf16(self):
        if not (torch.cuda.is_available() and quartet.library().cuda_built()):
            self.skipTest("needs a GPU and a libquartet_c built with CUDA")
        try:
            import transformers
        except ImportError as e:
            self.skipTest(f"transformers is not installed ({e})")
        torch.manual_seed(0)
        qt.manual_seed(0)
        config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ)
        twin = transformers.LlamaForCausalLM(config).cuda()
        model = qt.convert(copy.deepcopy(twin), recipe="quartet2")
        self.assertEqual(sum(isinstance(m, qt.Linear) for m in model.modules()), 4 * 7)

        quantized, reference = train(model, "cuda"), train(twin, "cuda")
        qt.check_errors("cuda")
        start, end = sum(quantized[:5]) / 5, sum(quantized[-20:]) / 20
        reference_end = sum(reference[-20:]) / 20
        print(f"quartet2 loss {start:.3f} -> {end:.3f}; bf16 twin -> {reference_end:.3f} (floor {math.log(SUCCESSORS):.3f})")
        print("quartet2 every 25 steps:", [round(v, 3) for v in quantized[::25]])
        print("bf16     every 25 steps:", [round(v, 3) for v in reference[::25]])
        self.assertTrue(all(math.isfinite(v) for v in quantized + reference))
        self.assertLess(end, start - 0.5 * (start - math.log(SUCCESSORS)), "the quantized loss did not fall halfway")
        self.assertLess(end, 1.15 * reference_end, "the quantized loss ends more than 15% above the BF16 twin's")


if __name__ == "__main__":
    unittest.main()
