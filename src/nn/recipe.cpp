#include "quartet/nn/recipe.h"

#include <fmt/format.h>

#include "quartet/error.h"

namespace quartet {

namespace {

OperandRule none() { return OperandRule{}; }

OperandRule rule(QuantizerKind kind, int rotation, OperandSource source = OperandSource::high_precision) {
  return OperandRule{QuantizerSpec::defaults(kind), rotation, source};
}

Recipe base_recipe(std::string_view name) {
  using K = QuantizerKind;
  using S = OperandSource;
  Recipe r;
  r.name = std::string(name);
  if (name == "bf16") return r;
  if (name == "nvidia" || name == "nvidia+4/6") {
    r.fwd_x = rule(name == "nvidia" ? K::rtn : K::four_over_six, 0);
    r.fwd_w = rule(K::square16, 0);
    r.dgrad_e = rule(K::sr, 0);
    r.dgrad_wt = rule(K::square16, 0, S::forward_transposed);
    r.wgrad_et = rule(K::sr, 16);
    r.wgrad_xt = rule(K::rtn, 16, S::high_precision);
    r.backward_signs = SignPolicy::fixed_per_run;
    return r;
  }
  if (name == "tetrajet2") {
    r.fwd_x = rule(K::rtn, 0);
    r.fwd_w = rule(K::rtn, 0);
    r.dgrad_e = rule(K::sr, 32);
    r.dgrad_wt = rule(K::sr, 32, S::requantized);
    r.wgrad_et = rule(K::sr, 32);
    r.wgrad_xt = rule(K::sr, 32, S::requantized);
    return r;
  }
  if (name == "quartet2") {
    r.fwd_x = rule(K::four_over_six, 0);
    r.fwd_w = rule(K::four_over_six, 0);
    r.dgrad_e = rule(K::ms_eden_g16, 128);
    r.dgrad_wt = rule(K::ms_eden_g16, 128, S::requantized);
    r.wgrad_et = rule(K::ms_eden_g16, 128);
    r.wgrad_xt = rule(K::ms_eden_g16, 128, S::requantized);
    return r;
  }
  if (name == "quartet1" || name == "quartet1-sr") {
    const K backward = name == "quartet1" ? K::mxfp4_rtn : K::mxfp4_sr;
    r.fwd_x = rule(K::mxfp4_quest, 32);
    r.fwd_w = rule(K::mxfp4_quest, 32);
    r.dgrad_e = rule(backward, 32);
    r.dgrad_wt = rule(backward, 32, S::requantized);
    r.wgrad_et = rule(backward, 32);
    r.wgrad_xt = rule(backward, 32, S::requantized);
    r.backward_through_trust_mask = true;
    return r;
  }
  throw Error(fmt::format("unknown recipe '{}'; expected one of: {}", name, fmt::join(recipe_names(), ", ")));
}

std::vector<OperandRule*> forward_rules(Recipe& r) { return {&r.fwd_x, &r.fwd_w}; }
std::vector<OperandRule*> backward_rules(Recipe& r) { return {&r.dgrad_e, &r.dgrad_wt, &r.wgrad_et, &r.wgrad_xt}; }

const char* source_name(OperandSource s) {
  switch (s) {
    case OperandSource::high_precision: return "";
    case OperandSource::requantized: return "requant ";
    case OperandSource::forward_transposed: return "forward W transposed ";
  }
  return "";
}

std::string describe_rule(const OperandRule& r) {
  if (!r.quantized()) return "bf16";
  std::string s = source_name(r.source);
  if (r.rotation) s += fmt::format("RHT-{} + ", r.rotation);
  s += quantizer_name(r.quantizer->kind);
  return s;
}

// Applies one backward-quantizer parameter to every backward operand whose kind accepts it.
template <class Set>
bool set_backward(Recipe& r, Set set) {
  bool any = false;
  for (OperandRule* op : backward_rules(r)) {
    if (op->quantized() && op->source != OperandSource::forward_transposed) any |= set(*op->quantizer);
  }
  return any;
}

}  // namespace

const std::vector<std::string>& recipe_names() {
  static const std::vector<std::string> names = {"bf16", "nvidia", "nvidia+4/6", "tetrajet2", "quartet2", "quartet1",
                                                 "quartet1-sr"};
  return names;
}

Recipe make_recipe(std::string_view name, const RecipeOptions& o) {
  Recipe r = base_recipe(name);
  const auto fail = [&](const std::string& why) { throw Error(fmt::format("recipe {}: {}", name, why)); };

  if (o.four_over_six) {
    bool any = false;
    for (OperandRule* op : forward_rules(r)) {
      if (!op->quantized()) continue;
      const QuantizerKind k = op->quantizer->kind;
      if (k == QuantizerKind::rtn || k == QuantizerKind::four_over_six) {
        op->quantizer = QuantizerSpec::defaults(*o.four_over_six ? QuantizerKind::four_over_six : QuantizerKind::rtn);
        any = true;
      }
    }
    if (!any) fail("4/6 applies to forward NVFP4 1x16 round-to-nearest quantizers, and this recipe has none");
  }
  if (o.forward_clip) {
    bool any = false;
    for (OperandRule* op : forward_rules(r)) {
      if (op->quantized() && (op->quantizer->kind == QuantizerKind::rtn || op->quantizer->kind == QuantizerKind::square16)) {
        op->quantizer->clip = *o.forward_clip;
        any = true;
      }
    }
    if (!any) fail("the forward clip factor applies to RTN forward quantizers (not 4/6 or QuEST)");
  }
  if (o.backward_quantizer) {
    if (!set_backward(r, [&](QuantizerSpec& s) {
          s = QuantizerSpec::defaults(*o.backward_quantizer);
          return true;
        })) {
      fail("it quantizes nothing in the backward pass");
    }
  }
  if (o.eden_group) {
    if (*o.eden_group != 16 && *o.eden_group != 128) fail(fmt::format("MS-EDEN group must be 16 or 128, got {}", *o.eden_group));
    const QuantizerKind eden = *o.eden_group == 16 ? QuantizerKind::ms_eden_g16 : QuantizerKind::ms_eden_g128;
    if (!set_backward(r, [&](QuantizerSpec& s) {
          if (s.kind != QuantizerKind::ms_eden_g16 && s.kind != QuantizerKind::ms_eden_g128) return false;
          s.kind = eden;
          return true;
        })) {
      fail("the MS-EDEN group size applies only to recipes with an MS-EDEN backward");
    }
  }
  if (o.backward_headroom) {
    if (!set_backward(r, [&](QuantizerSpec& s) {
          const bool has = s.kind == QuantizerKind::sr || s.kind == QuantizerKind::ms_eden_g16 ||
                           s.kind == QuantizerKind::ms_eden_g128;
          if (has) s.headroom = *o.backward_headroom;
          return has;
        })) {
      fail("the backward headroom applies to SR and MS-EDEN backward quantizers");
    }
  }
  if (o.backward_clip) {
    if (!set_backward(r, [&](QuantizerSpec& s) {
          const bool has = s.kind == QuantizerKind::ms_eden_g16 || s.kind == QuantizerKind::ms_eden_g128;
          if (has) s.clip = *o.backward_clip;
          return has;
        })) {
      fail("the backward clip applies to MS-EDEN backward quantizers");
    }
  }
  if (o.backward_rotation) {
    const int n = *o.backward_rotation;
    if (n != 16 && n != 32 && n != 128) fail(fmt::format("backward rotation must be 16, 32 or 128, got {}", n));
    bool any = false;
    for (auto [a, b] : {std::pair{&r.dgrad_e, &r.dgrad_wt}, std::pair{&r.wgrad_et, &r.wgrad_xt}}) {
      if (a->quantized() && a->rotation > 0) {
        a->rotation = b->rotation = n;
        any = true;
      }
    }
    if (!any) fail("it has no rotated backward GEMM whose rotation could change");
  }
  if (!o.quantize_forward) {
    // Forward in BF16; backward operands that came from the forward-quantized tensors now
    // come from the high-precision ones (there is nothing else to re-quantize).
    for (OperandRule* op : forward_rules(r)) *op = none();
    for (OperandRule* op : backward_rules(r)) op->source = OperandSource::high_precision;
    r.backward_through_trust_mask = false;
  }
  if (!o.quantize_backward) {
    // Backward in BF16 on the original tensors (straight-through estimator).
    for (OperandRule* op : backward_rules(r)) *op = none();
    r.backward_through_trust_mask = false;
  }
  if (!o.quantize_forward || !o.quantize_backward || o.four_over_six || o.backward_rotation || o.eden_group ||
      o.forward_clip || o.backward_headroom || o.backward_clip || o.backward_quantizer) {
    r.name += " (modified)";
  }
  r.validate();
  return r;
}

bool Recipe::saves_high_precision_x() const {
  return !wgrad_xt.quantized() || wgrad_xt.source == OperandSource::high_precision;
}

void Recipe::validate() const {
  const auto fail = [&](const std::string& why) { throw Error(fmt::format("recipe {}: {}", name, why)); };
  const struct {
    const char* gemm;
    const OperandRule& a;
    const OperandRule& b;
  } gemms[] = {{"forward", fwd_x, fwd_w}, {"dgrad", dgrad_e, dgrad_wt}, {"wgrad", wgrad_et, wgrad_xt}};
  for (const auto& g : gemms) {
    if (g.a.quantized() != g.b.quantized()) fail(fmt::format("the {} GEMM quantizes only one operand", g.gemm));
    if (!g.a.quantized()) continue;
    g.a.quantizer->validate();
    g.b.quantizer->validate();
    if (quantizer_format(g.a.quantizer->kind) != quantizer_format(g.b.quantizer->kind)) {
      fail(fmt::format("the {} GEMM mixes NVFP4 and MXFP4 operands", g.gemm));
    }
    if (g.a.rotation != g.b.rotation) {
      fail(fmt::format("the {} GEMM rotates its operands differently ({} vs {})", g.gemm, g.a.rotation, g.b.rotation));
    }
    if (!is_supported_rotation_size(g.a.rotation)) fail(fmt::format("rotation size {} is not 16, 32 or 128", g.a.rotation));
  }
  for (const OperandRule* op : {&dgrad_wt, &wgrad_xt}) {
    if (op->source != OperandSource::high_precision && !fwd_x.quantized()) {
      fail("a backward operand re-uses a forward-quantized tensor, but the forward pass is not quantized");
    }
  }
  if (dgrad_wt.source == OperandSource::forward_transposed &&
      (!fwd_w.quantized() || fwd_w.quantizer->kind != QuantizerKind::square16 || dgrad_wt.rotation != 0)) {
    fail("only a forward weight with 16x16 square blocks and no rotation can be reused transposed");
  }
  if (backward_through_trust_mask && (!fwd_x.quantized() || fwd_x.quantizer->kind != QuantizerKind::mxfp4_quest)) {
    fail("the trust-mask backward needs the QuEST forward quantizer");
  }
}

std::string Recipe::describe() const {
  return fmt::format("{}: forward X [{}] W [{}]; dgrad E [{}] W^T [{}]; wgrad E^T [{}] X^T [{}]; backward signs {}{}", name,
                     describe_rule(fwd_x), describe_rule(fwd_w), describe_rule(dgrad_e), describe_rule(dgrad_wt),
                     describe_rule(wgrad_et), describe_rule(wgrad_xt),
                     backward_signs == SignPolicy::fixed_per_run ? "fixed per run" : "fresh per call",
                     backward_through_trust_mask ? "; trust mask + H^T" : "");
}

}  // namespace quartet
